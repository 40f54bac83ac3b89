"""Residual units: every variant that [R1] and [R2] compare, chosen by name.

A unit computes  out = post( shortcut_scale * h(x) + residual_scale * F(x) ),  where
- F, the residual branch, is two 3x3 convs (`basic`) or 1x1-3x3-1x1 with 4x expansion
  (`bottleneck`), with BN and ReLU placed as `activation` says ([R2] figure 4);
- h is the shortcut: option A/B/C of [R1] 3.3, or none for a plain net; on units that keep the
  shape, [R2] table 1's `shortcut_variant` may replace the identity.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

SHORTCUTS = ("A", "B", "C", "none")
ACTIVATIONS = ("original", "bn_after_add", "relu_before_add", "relu_preact", "full_preact")
VARIANTS = ("identity", "exclusive_gating", "shortcut_gating", "conv1x1", "dropout")
STRIDE_ON = ("3x3", "1x1")


@dataclass(frozen=True)
class UnitOptions:
    block: str = "basic"
    shortcut: str = "A"
    activation: str = "original"
    shortcut_variant: str = "identity"
    shortcut_scale: float = 1.0  # lambda on h(x), [R2] table 1 "constant scaling"
    residual_scale: float = 1.0  # the scale on F(x), the same table's second column
    gate_bias: float = 0.0  # b_g's initial value in g(x) = sigmoid(W_g x + b_g)
    dropout_rate: float = 0.5
    stride_on: str = "3x3"  # bottleneck: stride on the 3x3 (torchvision v1.5) or first 1x1 ([R1])

    def __post_init__(self):
        for key, value, allowed in (
            ("block", self.block, tuple(UNITS)),
            ("shortcut", self.shortcut, SHORTCUTS),
            ("activation", self.activation, ACTIVATIONS),
            ("shortcut_variant", self.shortcut_variant, VARIANTS),
            ("stride_on", self.stride_on, STRIDE_ON),
        ):
            if value not in allowed:
                raise UserError(
                    f"model.{key}={value!r} is unknown; choose one of {', '.join(allowed)}."
                )
        changed = self.shortcut_variant != "identity" or self.shortcut_scale != 1
        if self.shortcut == "none" and changed:
            raise UserError(
                "model.shortcut=none is a plain net: it has no shortcut to gate, "
                "scale or replace. Use shortcut=A or B with the shortcut_variant."
            )
        if self.shortcut == "C" and self.shortcut_variant != "identity":
            raise UserError(
                "model.shortcut=C puts a projection on every shortcut, so there is "
                "no identity for shortcut_variant to replace; use shortcut=A or B."
            )
        gating = self.shortcut_variant.endswith("gating")
        if gating and (self.shortcut_scale != 1 or self.residual_scale != 1):
            raise UserError(
                "Gating sets the scales itself (1-g and g); leave shortcut_scale and "
                "residual_scale at 1 with a gating shortcut_variant."
            )

    @property
    def preact(self) -> bool:
        return self.activation in ("relu_preact", "full_preact")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A where the shape changes: subsample by the stride, append zero channels.

    It has no parameters, so a ResNet with option A has exactly as many as its plain twin.
    """

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class DropoutShortcut(nn.Module):
    """[R2] table 1: dropout on the shortcut. Not rescaled by 1/(1-p) as nn.Dropout is: [R2]
    analyses it as a scale on h(x) whose expectation is 1-p (0.5), so at test time h(x)*(1-p)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1 - self.rate)
        return x * torch.empty_like(x).bernoulli_(1 - self.rate)


def make_shortcut(o: UnitOptions, in_planes: int, out_planes: int, stride: int):
    reshapes = stride != 1 or in_planes != out_planes
    if o.shortcut == "none":
        return None
    if o.shortcut == "C" or (o.shortcut == "B" and reshapes):
        return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))
    if reshapes:
        return PadShortcut(stride, out_planes - in_planes)
    if o.shortcut_variant == "conv1x1":
        return conv1x1(in_planes, out_planes)  # [R2] figure 2(e): a 1x1 conv, no BN
    if o.shortcut_variant == "dropout":
        return DropoutShortcut(o.dropout_rate)
    return nn.Identity()


class ResidualUnit(nn.Module):
    """A unit of either kind (BasicUnit, BottleneckUnit: `shapes` says which convs its branch
    has). Module names follow torchvision (conv1, bn1, ..., downsample) so that the original
    units load torchvision's weights; `layers()` gives them in order, for whoever needs them
    (the forward pass, [R1] figure 7's responses).

    Pre-activation units ([R2] section 4 and appendix) start the branch with BN-ReLU
    (`full_preact`) or ReLU (`relu_preact`). `preact` says where that first activation goes:
    "branch", on the branch only; "shared", before the split, so the shortcut sees it too (units
    whose shortcut is not a plain identity); "none", already done by the net's first conv-BN-ReLU
    (the first unit: [R2] applies its BN-ReLU before the split, which is the same thing).
    """

    expansion = 1  # output channels per `planes`

    @staticmethod
    def shapes(o: UnitOptions, in_planes: int, planes: int, stride: int) -> list[tuple]:
        """The branch's convs: (in channels, out channels, kernel size, stride) each."""
        raise NotImplementedError

    def __init__(
        self, o: UnitOptions, in_planes: int, planes: int, stride: int, preact: str = "branch"
    ):
        super().__init__()
        self.o, self.preact = o, preact
        out_planes = planes * self.expansion
        shapes = self.shapes(o, in_planes, planes, stride)
        self.depth = len(shapes)
        for i, (cin, cout, k, s) in enumerate(shapes, 1):
            conv = conv3x3(cin, cout, s) if k == 3 else conv1x1(cin, cout, s)
            setattr(self, f"conv{i}", conv)
            # full pre-activation normalises each conv's input, the others its output.
            if o.activation != "full_preact":
                setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
            elif i > 1 or preact != "none":
                setattr(self, f"bn{i}", nn.BatchNorm2d(cin))
        self.downsample = make_shortcut(o, in_planes, out_planes, stride)
        self.gate = None
        if o.shortcut_variant.endswith("gating") and isinstance(self.downsample, nn.Identity):
            self.gate = nn.Conv2d(in_planes, out_planes, 1)  # W_g and b_g of [R2] eq. (5)
            nn.init.constant_(self.gate.bias, o.gate_bias)

    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
        """The branch's convs in order, each with its BN (after it, or before it in full
        pre-activation; None for the first conv of a first full pre-activation unit)."""
        return [
            (getattr(self, f"conv{i}"), getattr(self, f"bn{i}", None))
            for i in range(1, self.depth + 1)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.o
        if o.preact and self.preact == "shared":
            x = self.preactivate(x, self.layers()[0][1])
        out = x
        for i, (conv, bn) in enumerate(self.layers(), 1):
            last = i == self.depth
            if o.preact:
                if i > 1 or self.preact == "branch":
                    out = self.preactivate(out, bn)
                out = conv(out)
                if o.activation == "relu_preact":
                    out = bn(out)
            else:
                out = conv(out)
                if not (last and o.activation == "bn_after_add"):
                    out = bn(out)
                if not last or o.activation == "relu_before_add":
                    out = F.relu(out)
        out = self.combine(x, out)
        if o.activation == "bn_after_add":
            out = self.layers()[-1][1](out)
        if o.activation in ("original", "bn_after_add"):
            out = F.relu(out)
        return out

    def preactivate(self, x: torch.Tensor, bn: nn.BatchNorm2d | None) -> torch.Tensor:
        if self.o.activation == "full_preact":
            x = bn(x)
        return F.relu(x)

    def combine(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        o = self.o
        if self.downsample is None:
            return residual
        h = self.downsample(x)
        if self.gate is not None:
            g = torch.sigmoid(self.gate(x))
            if o.shortcut_variant == "exclusive_gating":
                return (1 - g) * h + g * residual
            return (1 - g) * h + residual  # shortcut-only gating
        if o.shortcut_scale == o.residual_scale == 1:
            return h + residual  # the usual unit: no multiplications in the hot path
        return o.shortcut_scale * h + o.residual_scale * residual


class BasicUnit(ResidualUnit):
    """Two 3x3 convs ([R1] figure 5 left)."""

    @staticmethod
    def shapes(o: UnitOptions, in_planes: int, planes: int, stride: int) -> list[tuple]:
        return [(in_planes, planes, 3, stride), (planes, planes, 3, 1)]


class BottleneckUnit(ResidualUnit):
    """1x1, 3x3, 1x1 convs, the last widening 4x ([R1] figure 5 right); the stride on the 3x3
    (torchvision's v1.5) or on the first 1x1 ([R1]), as stride_on says."""

    expansion = 4

    @staticmethod
    def shapes(o: UnitOptions, in_planes: int, planes: int, stride: int) -> list[tuple]:
        s1, s3 = (stride, 1) if o.stride_on == "1x1" else (1, stride)
        return [
            (in_planes, planes, 1, s1),
            (planes, planes, 3, s3),
            (planes, planes * 4, 1, 1),
        ]


UNITS = {"basic": BasicUnit, "bottleneck": BottleneckUnit}  # model.block -> the unit's class


def usual_shortcut(arch: str, block: str) -> str:
    """The shortcut the papers use unless they say otherwise: A (zero-padding) for CIFAR's
    basic units ([R1] 4.2), B (projections where the shape changes) for the rest."""
    return "A" if arch == "cifar" and block == "basic" else "B"
