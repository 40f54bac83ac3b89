"""The faster step changes nothing but speed: channels_last, activation checkpointing,
precision and compile choices, and the stop signals."""

import os
import signal

import pytest
import torch
import torch.nn.functional as F

from resnet_repro.errors import UserError
from resnet_repro.nets.models import build_model
from resnet_repro.training import runtime

CPU = torch.device("cpu")


def twins(**options):
    torch.manual_seed(0)
    a = build_model(**options)
    b = build_model(**options)
    b.load_state_dict(a.state_dict())
    return a, b


def step(model, x, y):
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach()


def batch(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_channels_last_gives_the_same_outputs_and_gradients():
    plain, nhwc = twins(depth=20)
    nhwc.to(memory_format=torch.channels_last)
    x, y = batch()
    la, lb = step(plain, x, y), step(nhwc, x.contiguous(memory_format=torch.channels_last), y)
    torch.testing.assert_close(la, lb)
    assert nhwc.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for p, q in zip(plain.parameters(), nhwc.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        dict(depth=20),
        dict(depth=11, block="bottleneck", activation="full_preact", shortcut="B"),
        dict(depth=14, shortcut_variant="dropout"),  # random masks: recomputed identically
    ],
)
def test_activation_checkpointing_changes_nothing_but_memory(options):
    plain, ckpt = twins(**options)
    ckpt.checkpointing = True
    x, y = batch()
    torch.manual_seed(5)
    la = step(plain, x, y)
    torch.manual_seed(5)
    lb = step(ckpt, x, y)
    assert torch.equal(la, lb)
    for p, q in zip(plain.parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    # BatchNorm statistics are updated once, not again by the recomputation.
    sa, sb = plain.state_dict(), ckpt.state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert int(sb["bn1.num_batches_tracked"]) == 1


def test_checkpointing_is_a_model_setting():
    model = build_model(depth=20, checkpointing=True)
    assert model.checkpointing and not build_model(depth=20).checkpointing


def test_precision_choices():
    assert runtime.choose_precision(CPU, "auto") == "fp32"  # fp32 on a CPU unless asked
    assert runtime.choose_precision(CPU, "bf16") == "bf16"
    with pytest.raises(UserError, match="fp16 is for CUDA GPUs; on a CPU use bf16"):
        runtime.choose_precision(CPU, "fp16")
    with pytest.raises(UserError, match="use auto, fp32, bf16, fp16"):
        runtime.choose_precision(CPU, "amp")
    assert runtime.grad_scaler(CPU, "bf16") is None  # bf16 has fp32's range


def test_compile_choices():
    gpu = torch.device("cuda", 0)  # the choice only; nothing runs on it
    short, long = runtime.COMPILE_AFTER["cuda"] - 1, runtime.COMPILE_AFTER["cuda"]
    assert not runtime.choose_compile("auto", gpu, short, checkpointing=False)
    assert runtime.choose_compile("auto", gpu, long, checkpointing=False)
    assert not runtime.choose_compile("auto", CPU, 10**6, checkpointing=False)  # measured
    assert not runtime.choose_compile("auto", gpu, 10**6, checkpointing=False, depth=1202)
    assert runtime.choose_compile(True, CPU, 1, checkpointing=False)
    assert not runtime.choose_compile(False, CPU, 10**6, checkpointing=False)
    assert not runtime.choose_compile("auto", CPU, 10**6, checkpointing=True)
    with pytest.raises(UserError, match="cannot be combined with model.checkpointing"):
        runtime.choose_compile(True, CPU, 10**6, checkpointing=True)
    with pytest.raises(UserError, match="auto, true or false"):
        runtime.choose_compile("yes", CPU, 10, checkpointing=False)


def test_hardware_is_named():
    facts = runtime.hardware(CPU)
    assert facts["cpu"] and facts["threads"] >= 1 and facts["torch"] == torch.__version__


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_a_stop_signal_is_handed_on_after_the_checkpoint(sig):
    seen = []
    before = signal.signal(sig, lambda signum, frame: seen.append(signum))  # submitit's, say
    try:
        stop = runtime.StopFlag()
        assert not stop()
        os.kill(os.getpid(), sig)
        assert stop() and seen == []  # the loop saves first...
        stop.restore()
        stop.forward()
        assert seen == [sig]  # ...then the earlier handler has its turn (submitit requeues)
    finally:
        signal.signal(sig, before)
