import itertools

import pytest
import torch
import torchvision

from resnet_repro.errors import UserError
from resnet_repro.nets.models import build_model, count_flops, count_parameters
from resnet_repro.nets.units import (
    ACTIVATIONS,
    UNITS,
    BasicUnit,
    BottleneckUnit,
    DropoutShortcut,
    PadShortcut,
    ResidualUnit,
    UnitOptions,
)

# [R1] Table 6, option A: parameters in millions, to the paper's precision.
PAPER_PARAMS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_parameter_counts_match_r1_table_6(depth):
    model = build_model(depth, shortcut="A")
    digits = 1 if depth >= 110 else 2
    assert round(count_parameters(model) / 1e6, digits) == PAPER_PARAMS[depth]
    # The plain net has the same layers and option A's shortcuts have no parameters.
    assert count_parameters(build_model(depth, shortcut="none")) == count_parameters(model)


def weights(model):
    """Conv and fc weights: how [R2] counts ResNet-1001's 10.2M (10.33M with BN)."""
    return sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    )


@pytest.mark.parametrize(("depth", "millions"), [(164, 1.7), (1001, 10.2)])
def test_bottleneck_parameter_counts_match_r2(depth, millions):
    for activation in ("original", "full_preact"):
        model = build_model(depth, block="bottleneck", shortcut="B", activation=activation)
        assert round(weights(model) / 1e6, 1) == millions


# [R1] table 1: FLOPs (multiply-adds) x 1e9 at 224 px; stride on the first 1x1 as in [R1].
IMAGENET = {
    18: ("basic", 1.8),
    34: ("basic", 3.6),
    50: ("bottleneck", 3.8),
    101: ("bottleneck", 7.6),
    152: ("bottleneck", 11.3),
}


@pytest.mark.parametrize("depth", sorted(IMAGENET))
def test_imagenet_flops_match_r1_table_1(depth):
    block, gflops = IMAGENET[depth]
    model = build_model(
        depth, arch="imagenet", block=block, shortcut="B", stride_on="1x1", num_classes=1000
    )
    assert abs(count_flops(model, 224) / 1e9 - gflops) < 0.1  # [R1] gives 3.66 as 3.6


def test_resnet50_parameters_and_v15_flops():
    model = build_model(50, arch="imagenet", block="bottleneck", shortcut="B", num_classes=1000)
    assert round(count_parameters(model) / 1e6, 1) == 25.6
    assert round(count_flops(model, 224) / 1e9, 2) == 4.09  # stride on the 3x3, as torchvision


def randomize(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(
                    torch.rand(t.shape, generator=g) + 0.5
                    if "running_var" in name
                    else torch.randn(t.shape, generator=g) * 0.1
                )


@pytest.mark.parametrize("depth", sorted(IMAGENET))
def test_torchvision_checkpoints_load_and_give_the_same_outputs(depth):
    reference = getattr(torchvision.models, f"resnet{depth}")()  # random weights, no download
    randomize(reference)
    model = build_model(
        depth, arch="imagenet", block=IMAGENET[depth][0], shortcut="B", num_classes=1000
    )
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    model.load_state_dict(theirs, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference.eval()(x), atol=1e-5, rtol=1e-4)


def test_layer_count_is_depth():
    for model, depth in (
        (build_model(56), 56),
        (build_model(164, block="bottleneck", shortcut="B"), 164 + 3),
        (build_model(34, arch="imagenet", num_classes=1000), 34),
    ):
        weighted = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
        assert len(weighted) == depth  # + the three projections of a bottleneck CIFAR net


def test_option_a_subsamples_and_zero_pads():
    shortcut = PadShortcut(stride=2, extra_channels=16)
    x = torch.randn(2, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0
    assert not list(shortcut.parameters())


def shortcuts(model):
    return [u.downsample for u in model.modules() if isinstance(u, ResidualUnit)]


def test_shortcut_options():
    a, b, c, plain = (build_model(20, shortcut=s) for s in ("A", "B", "C", "none"))
    assert all(s is None for s in shortcuts(plain))
    assert all(isinstance(s, torch.nn.Identity | PadShortcut) for s in shortcuts(a))
    assert sum(isinstance(s, PadShortcut) for s in shortcuts(a)) == 2  # the two stage changes
    # B projects only where the shape changes (2 places), C everywhere (9 units).
    assert sum(isinstance(s, torch.nn.Sequential) for s in shortcuts(b)) == 2
    assert sum(isinstance(s, torch.nn.Sequential) for s in shortcuts(c)) == 9


def unit(**options):
    torch.manual_seed(0)
    o = UnitOptions(**options)
    return UNITS[o.block](o, 16, 16, 1, "branch").eval()


def test_units_are_classes_chosen_by_name_and_list_their_layers():
    basic, bottleneck = build_model(20).layer2[0], build_model(164, block="bottleneck").layer2[0]
    assert type(basic) is BasicUnit and type(bottleneck) is BottleneckUnit
    assert [conv.kernel_size for conv, _ in basic.layers()] == [(3, 3), (3, 3)]
    assert [conv.kernel_size for conv, _ in bottleneck.layers()] == [(1, 1), (3, 3), (1, 1)]
    assert [bn for _, bn in basic.layers()] == [basic.bn1, basic.bn2]  # torchvision's names
    assert bottleneck.conv2.stride == (2, 2)  # stride_on=3x3, torchvision's v1.5


def test_plain_unit_has_no_identity_path():
    res, plain = unit(), unit(shortcut="none")
    x = torch.randn(2, 16, 8, 8)
    # With the residual branch silenced, a residual unit passes relu(x); a plain one gives 0.
    for u in (res, plain):
        torch.nn.init.zeros_(u.bn2.weight)
    assert torch.allclose(res(x), torch.relu(x))
    assert torch.count_nonzero(plain(x)) == 0


def test_activation_placements_are_r2s_figure_4():
    """Each placement computes its formula of [R2] figure 4, written out here from the unit's own
    layers, BatchNorm with statistics of its own so that every BN counts where it stands."""
    x = torch.randn(4, 16, 8, 8)
    relu = torch.relu
    formulas = {
        "original": lambda u: relu(x + u.bn2(u.conv2(relu(u.bn1(u.conv1(x)))))),
        "bn_after_add": lambda u: relu(u.bn2(x + u.conv2(relu(u.bn1(u.conv1(x)))))),
        "relu_before_add": lambda u: x + relu(u.bn2(u.conv2(relu(u.bn1(u.conv1(x)))))),
        "relu_preact": lambda u: x + u.bn2(u.conv2(relu(u.bn1(u.conv1(relu(x)))))),
        "full_preact": lambda u: x + u.conv2(relu(u.bn2(u.conv1(relu(u.bn1(x)))))),
    }
    outputs = {}
    for activation, formula in formulas.items():
        torch.manual_seed(0)
        u = unit(activation=activation).eval()
        for bn in (u.bn1, u.bn2):
            for t in (bn.weight, bn.bias, bn.running_mean):
                torch.nn.init.normal_(t.data)
            torch.nn.init.uniform_(bn.running_var, 0.5, 2.0)
        with torch.no_grad():
            outputs[activation] = u(x)
            torch.testing.assert_close(outputs[activation], formula(u))
    values = list(outputs.values())  # and no two placements compute the same
    assert not any(torch.allclose(a, b) for i, a in enumerate(values) for b in values[i + 1 :])


def test_activation_placements():
    x = torch.randn(4, 16, 8, 8)
    # ReLU after the addition (a, b) gives non-negative outputs; the others keep x's sign.
    for activation in ("original", "bn_after_add"):
        assert (unit(activation=activation)(x) >= 0).all()
    for activation in ("relu_before_add", "relu_preact", "full_preact"):
        assert (unit(activation=activation)(x) < 0).any()
    # (c): the branch is non-negative, so out - x >= 0.
    assert (unit(activation="relu_before_add")(x) - x >= -1e-6).all()
    # (e) normalises each conv's input: BN over the unit's input channels first.
    full = BottleneckUnit(
        UnitOptions(block="bottleneck", activation="full_preact"), 64, 16, 1, "branch"
    )
    assert (full.bn1.num_features, full.bn2.num_features, full.bn3.num_features) == (64, 16, 16)


def test_preact_nets_end_with_bn_relu_and_start_after_the_first_conv():
    model = build_model(20, activation="full_preact").eval()
    assert not hasattr(model.layer1[0], "bn1")  # the first unit's BN-ReLU is the net's bn1
    assert model.layer2[0].preact == "shared" and model.layer2[1].preact == "branch"
    # The extra BN-ReLU before pooling: silence it and only the fc bias is left.
    torch.nn.init.zeros_(model.final_bn.weight)
    torch.nn.init.zeros_(model.final_bn.bias)
    out = model(torch.randn(3, 3, 32, 32))
    assert torch.allclose(out, model.fc.bias.expand(3, -1))
    # Negative values after the final BN are cut by its ReLU.
    torch.nn.init.constant_(model.final_bn.bias, -1.0)
    assert torch.allclose(model(torch.randn(3, 3, 32, 32)), model.fc.bias.expand(3, -1))
    assert build_model(20).final_bn is None


def test_gate_bias_initialisation_reaches_the_gates():
    model = build_model(20, shortcut_variant="exclusive_gating", gate_bias=-6.0)
    gates = [u.gate for u in model.modules() if isinstance(u, ResidualUnit)]
    assert sum(g is not None for g in gates) == 7  # every unit with an identity shortcut
    assert all(torch.all(g.bias == -6.0) for g in gates if g is not None)
    u = unit(shortcut_variant="exclusive_gating", gate_bias=-20.0)
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(u(x), torch.relu(x), atol=1e-5)  # g ~ 0: all shortcut
    u = unit(shortcut_variant="shortcut_gating", gate_bias=20.0)
    torch.nn.init.zeros_(u.bn2.weight)
    assert torch.allclose(u(x), torch.zeros_like(x), atol=1e-5)  # 1-g ~ 0: shortcut gated off


def test_constant_scaling_and_dropout_shortcut():
    x = torch.randn(2, 16, 8, 8)
    half = unit(shortcut_scale=0.5)
    torch.nn.init.zeros_(half.bn2.weight)
    assert torch.allclose(half(x), torch.relu(0.5 * x))
    drop = DropoutShortcut(0.5)
    assert torch.allclose(drop.eval()(x), 0.5 * x)  # expectation 1-p at test time, as [R2]
    kept = drop.train()(torch.ones(1000))
    assert set(kept.unique().tolist()) == {0.0, 1.0} and 300 < kept.sum() < 700


def test_conv1x1_shortcut_has_no_bn():
    u = unit(shortcut_variant="conv1x1")
    assert isinstance(u.downsample, torch.nn.Conv2d)


GRID = list(
    itertools.product(
        ["basic", "bottleneck"],
        ACTIVATIONS,
        ["identity", "exclusive_gating", "shortcut_gating", "conv1x1", "dropout"],
    )
)


@pytest.mark.parametrize(("block", "activation", "variant"), GRID)
def test_every_unit_option_trains(block, activation, variant):
    depth = 8 if block == "basic" else 11
    model = build_model(
        depth,
        block=block,
        shortcut="B" if block == "bottleneck" else "A",
        activation=activation,
        shortcut_variant=variant,
        num_classes=5,
    )
    out = model(torch.randn(4, 3, 16, 16))
    assert out.shape == (4, 5)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_he_init_and_no_conv_bias():
    model = build_model(20)
    conv = model.layer2[0].conv1  # 3x3, 16 -> 32: fan-out 9 * 32
    assert conv.bias is None
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 32)) ** 0.5, rel=0.1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depth": 21}, "6n\\+2 with n >= 1: 8, 14, 20"),
        ({"depth": "20"}, "6n\\+2"),
        ({"depth": 32, "block": "bottleneck"}, "9n\\+2 with n >= 1: 11, 20, 29, 47, 164, 1001"),
        ({"depth": 20, "shortcut": "D"}, "A, B, C, none"),
        ({"depth": 20, "activation": "preact"}, "original, bn_after_add, relu_before_add"),
        ({"depth": 20, "shortcut": "none", "shortcut_variant": "exclusive_gating"}, "plain net"),
        ({"depth": 20, "shortcut": "none", "shortcut_scale": 0.5}, "plain net"),
        ({"depth": 20, "shortcut": "C", "shortcut_variant": "dropout"}, "no identity"),
        ({"depth": 20, "shortcut_variant": "shortcut_gating", "residual_scale": 0.5}, "Gating"),
        ({"depth": 50, "arch": "imagenet"}, "50 \\(bottleneck\\)"),
        ({"depth": 20, "arch": "mnist"}, "cifar or imagenet"),
        ({"depth": 20, "block": "wide"}, "basic, bottleneck"),
    ],
)
def test_invalid_models_are_explained(options, message):
    with pytest.raises(UserError, match=message):
        build_model(**options)
