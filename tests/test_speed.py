"""The faster step changes nothing but speed and memory: channels_last and activation
checkpointing give the same outputs and gradients."""

import pytest
import torch
import torch.nn.functional as F

from resnet_repro.nets.models import build_model

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


def unit_runs_and_saved_bytes(model, x, y) -> tuple[list[int], int]:
    """Which residual units ran in a forward and backward pass (each time one started: a
    recomputation stops once it has all it needs), and the bytes the forward pass saved."""
    units = [u for stage in (model.layer1, model.layer2, model.layer3) for u in stage]
    runs, saved = [], []
    for i, unit in enumerate(units):
        unit.register_forward_pre_hook(lambda *_, i=i: runs.append(i))

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    return sorted(runs), sum(saved)


def test_activation_checkpointing_recomputes_each_unit_and_saves_less():
    """The same numbers (above) would come out if nothing were recomputed: here each residual
    unit runs twice (again in the backward pass) and the forward pass saves far less for it."""
    plain, ckpt = twins(depth=20)
    ckpt.checkpointing = True
    x, y = batch()
    once, plain_bytes = unit_runs_and_saved_bytes(plain, x, y)
    twice, ckpt_bytes = unit_runs_and_saved_bytes(ckpt, x, y)
    assert once == list(range(9)) and twice == sorted(2 * list(range(9)))
    assert ckpt_bytes < plain_bytes / 3


def test_checkpointing_is_a_model_setting():
    model = build_model(depth=20, checkpointing=True)
    assert model.checkpointing and not build_model(depth=20).checkpointing
