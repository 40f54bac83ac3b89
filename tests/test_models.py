import pytest
import torch
import torch.nn.functional as F

from resnet_repro.errors import UserError
from resnet_repro.models import BasicBlock, PadShortcut, build_model, count_parameters

# [R1] Table 6, option A: parameters in millions, to the paper's precision.
PAPER_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_parameter_counts_match_table_6(depth):
    model = build_model(depth, "A")
    digits = 1 if depth >= 110 else 2
    assert round(count_parameters(model) / 1e6, digits) == PAPER_PARAMS[depth]
    # The plain net has the same layers and option A's shortcuts have no parameters.
    assert count_parameters(build_model(depth, "none")) == count_parameters(model)


def test_layer_count_is_depth():
    model = build_model(56)
    weighted = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(weighted) == 56


def test_option_a_subsamples_and_zero_pads():
    shortcut = PadShortcut(stride=2, extra_channels=16)
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0
    assert not list(shortcut.parameters())


def shortcuts(model):
    return [b.downsample for b in model.modules() if isinstance(b, BasicBlock)]


def test_shortcut_options():
    a, b, c, plain = (build_model(20, s) for s in ("A", "B", "C", "none"))
    assert all(s is None for s in shortcuts(plain))
    assert all(isinstance(s, torch.nn.Identity | PadShortcut) for s in shortcuts(a))
    assert sum(isinstance(s, PadShortcut) for s in shortcuts(a)) == 2  # the two stage changes
    # B projects only where the shape changes (2 places), C everywhere (9 blocks).
    assert sum(isinstance(s, torch.nn.Sequential) for s in shortcuts(b)) == 2
    assert sum(isinstance(s, torch.nn.Sequential) for s in shortcuts(c)) == 9


def test_plain_block_has_no_identity_path():
    torch.manual_seed(0)
    res, plain = BasicBlock(16, 16, 1, "A"), BasicBlock(16, 16, 1, "none")
    plain.load_state_dict(res.state_dict())
    x = torch.randn(2, 16, 8, 8)
    # With the residual branch silenced, a residual block passes relu(x); a plain block gives 0.
    for block in (res, plain):
        torch.nn.init.zeros_(block.bn2.weight)
        block.eval()
    assert torch.allclose(res(x), F.relu(x))
    assert torch.count_nonzero(plain(x)) == 0


@pytest.mark.parametrize("shortcut", ["A", "B", "C", "none"])
def test_every_parameter_gets_a_gradient(shortcut):
    model = build_model(8, shortcut, num_classes=100)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 100)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_he_init_and_no_conv_bias():
    model = build_model(20)
    conv = model.layer2[0].conv1  # 3x3, 16 -> 32: fan-out 9 * 32
    assert conv.bias is None
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 32)) ** 0.5, rel=0.1)


@pytest.mark.parametrize("depth", [21, 7, 0, "20"])
def test_invalid_depth_names_valid_ones(depth):
    with pytest.raises(UserError, match="6n\\+2.*20, 26, 32"):
        build_model(depth)


def test_unknown_shortcut():
    with pytest.raises(UserError, match="A, B, C, none"):
        build_model(20, "D")
