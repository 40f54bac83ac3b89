"""The networks of [R1] and [R2]: CIFAR and ImageNet ResNets and plain nets, by depth.

- arch=cifar ([R1] 4.2, [R2]): a 3x3 conv, three stages on 32/16/8 px maps with 16/32/64
  filters (x4 after a bottleneck), global average pooling, a fully connected layer.
  Depth 6n+2 with basic units, 9n+2 with bottleneck units.
- arch=imagenet ([R1] table 1): a 7x7/2 conv and 3x3/2 max pool, four stages with 64-512
  filters; depths 18 and 34 (basic), 50, 101 and 152 (bottleneck). With shortcut B and the
  original units its parameters have torchvision's names and shapes.
"""

import contextlib
import dataclasses
import inspect
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UserError
from .units import UNITS, UnitOptions

WIDTHS = {"cifar": (16, 32, 64), "imagenet": (64, 128, 256, 512)}
IMAGENET_DEPTHS = {  # [R1] table 1: units per stage
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    def __init__(
        self,
        arch: str,
        layers: tuple[int, ...],
        o: UnitOptions,
        num_classes: int,
        checkpointing: bool = False,
    ):
        super().__init__()
        self.checkpointing = checkpointing
        widths = WIDTHS[arch]
        if arch == "cifar":
            self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if arch == "imagenet" else None
        in_planes = widths[0]
        for s, (planes, count) in enumerate(zip(widths, layers, strict=True), 1):
            units, unit = [], UNITS[o.block]
            for j in range(count):
                stride = 2 if s > 1 and j == 0 else 1
                out_planes = planes * unit.expansion
                identity = stride == 1 and in_planes == out_planes and o.shortcut in ("A", "B")
                preact = "none" if s == 1 and j == 0 else "branch" if identity else "shared"
                units.append(unit(o, in_planes, planes, stride, preact))
                in_planes = out_planes
            setattr(self, f"layer{s}", nn.Sequential(*units))
        self.num_stages = len(layers)
        # [R2] appendix: a pre-activation net ends with an extra BN-ReLU (ReLU for relu_preact).
        self.final_bn = nn.BatchNorm2d(in_planes) if o.activation == "full_preact" else None
        self.final_relu = o.preact
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        recompute = self.checkpointing and self.training and torch.is_grad_enabled()
        for s in range(1, self.num_stages + 1):
            stage = getattr(self, f"layer{s}")
            if not recompute:
                x = stage(x)
                continue
            # Activation checkpointing: keep only each unit's input and recompute the rest in
            # the backward pass; memory then grows with the number of units, not of layers.
            for unit in stage:
                context = partial(recompute_context, unit)
                x = checkpoint(unit, x, use_reentrant=False, context_fn=context)
        if self.final_bn is not None:
            x = self.final_bn(x)
        if self.final_relu:
            x = F.relu(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def recompute_context(unit: nn.Module):
    return contextlib.nullcontext(), frozen_statistics(unit)


@contextlib.contextmanager
def frozen_statistics(module: nn.Module):
    """The recomputation normalises with the same batch statistics but must not update the
    running ones again: the first forward pass already did. Momentum 0 keeps them as they are
    (the saved tensors are those of the recomputation, so they cannot be swapped for copies)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(bns, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def stage_layers(arch: str, depth, block: str) -> tuple[int, ...]:
    if arch == "imagenet":
        if depth not in IMAGENET_DEPTHS or IMAGENET_DEPTHS[depth][0] != block:
            valid = ", ".join(f"{d} ({b})" for d, (b, _) in IMAGENET_DEPTHS.items())
            raise UserError(
                f"model.depth={depth!r} with block={block} is not an ImageNet ResNet "
                f"of [R1] table 1; depths (blocks) are {valid}."
            )
        return IMAGENET_DEPTHS[depth][1]
    if arch != "cifar":
        raise UserError(f"model.arch={arch!r} is unknown; use cifar or imagenet.")
    per_unit, examples = (
        (2, "8, 14, 20, 26, 32, 44, 56, 110, 1202")
        if block == "basic"
        else (3, "11, 20, 29, 47, 164, 1001")
    )
    k = 3 * per_unit  # layers in one unit of every stage
    if not isinstance(depth, int) or depth < k + 2 or (depth - 2) % k:
        raise UserError(
            f"model.depth={depth!r} is not a valid CIFAR ResNet depth with {block} units. Depth "
            f"must be {k}n+2 with n >= 1: {examples}, ... ([R1] 4.2, [R2] 4)."
        )
    return ((depth - 2) // k,) * 3


def init_weights(model: nn.Module) -> None:
    # He initialisation [R1] 3.4, fan-out as in the authors' Torch code and torchvision.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(
    depth: int,
    arch: str = "cifar",
    checkpointing: bool = False,
    num_classes: int = 10,
    **unit,
) -> ResNet:
    """The net of `depth`; `unit` holds UnitOptions' settings (block, shortcut, activation,
    ...), whose defaults are [R1]'s original unit with the identity shortcut."""
    block = unit.get("block", "basic")
    if block not in UNITS:
        raise UserError(f"model.block={block!r} is unknown; choose one of {', '.join(UNITS)}.")
    layers = stage_layers(arch, depth, block)
    return ResNet(arch, layers, UnitOptions(**unit), num_classes, checkpointing)


def model_defaults() -> dict:
    """Every model setting but the depth, at its default: build_model's and UnitOptions'."""
    signature = inspect.signature(build_model).parameters.values()
    own = {p.name: p.default for p in signature if p.default is not inspect.Parameter.empty}
    del own["num_classes"]  # the data's, not a model setting
    return own | {f.name: f.default for f in dataclasses.fields(UnitOptions)}


MODEL_KEYS = ("depth", *model_defaults())  # the keys of conf/model/resnet.yaml


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, image_size: int) -> int:
    """Multiply-adds of the convolutions and the fully connected layer for one image, as
    [R1] table 1 counts "FLOPs" (BN, ReLU, additions and pooling left out)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = (
                module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            )
        else:
            per_output = module.in_features
        total += output[0].numel() * per_output

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with hooked_eval(model, layers, lambda i: hook):
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    return total


@contextlib.contextmanager
def hooked_eval(model: nn.Module, layers: list[nn.Module], hook_for: Callable):
    """The model in evaluation mode, with hook_for(i) as the forward hook of layers[i]; its
    mode and its hooks as they were afterwards, however the block ends."""
    handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
