"""The run's runtime choices on this machine: precision and torch.compile (auto and asked),
the hardware named in summary.json, and stop signals handed on after the checkpoint."""

import os
import signal

import pytest
import torch

from resnet_repro.errors import UserError
from resnet_repro.training import runtime

CPU = torch.device("cpu")


def test_precision_choices():
    assert runtime.choose_precision(CPU, "auto") == "fp32"  # fp32 on a CPU unless asked
    assert runtime.choose_precision(CPU, "bf16") == "bf16"
    with pytest.raises(UserError, match="fp16 is for CUDA GPUs; on a CPU use bf16"):
        runtime.choose_precision(CPU, "fp16")
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
