"""The CIFAR ResNets and plain nets of [R1] section 4.2.

Depth 6n+2: a 3x3 conv, three stages of n basic blocks (two 3x3 convs each) on 32/16/8 px maps
with 16/32/64 filters, global average pooling and a fully connected layer. The plain net is the
same stack with the shortcuts taken out.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

# [R1] 3.3: A = identity, zero-padded where the shape changes; B = 1x1 projection only where the
# shape changes; C = projection on every shortcut. "none" is the plain net.
SHORTCUTS = ("A", "B", "C", "none")
WIDTHS = (16, 32, 64)


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


def make_shortcut(shortcut: str, in_planes: int, planes: int, stride: int) -> nn.Module | None:
    reshapes = stride != 1 or in_planes != planes
    if shortcut == "none":
        return None
    if shortcut == "C" or (shortcut == "B" and reshapes):
        return nn.Sequential(conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))
    if shortcut == "A" and reshapes:
        return PadShortcut(stride, planes - in_planes)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs, BN after each, ReLU after the addition ([R1] figure 2)."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        # Named as in torchvision, so that projection weights keep torchvision's keys; it holds
        # every kind of shortcut, and is None in a plain net.
        self.downsample = make_shortcut(shortcut, in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            out = out + self.downsample(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, shortcut: str = "A", num_classes: int = 10):
        super().__init__()
        n = blocks_per_stage(depth)
        if shortcut not in SHORTCUTS:
            raise UserError(
                f"model.shortcut={shortcut!r} is not a shortcut option; choose one of "
                f"{', '.join(SHORTCUTS)} (A/B/C as in [R1] section 3.3, none for the plain net)."
            )
        self.conv1 = conv3x3(3, WIDTHS[0])
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        stages, in_planes = [], WIDTHS[0]
        for i, planes in enumerate(WIDTHS):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def blocks_per_stage(depth: int) -> int:
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise UserError(
            f"model.depth={depth!r} is not a valid CIFAR ResNet depth. Depth must be 6n+2 with "
            "n >= 1: 8, 14, 20, 26, 32, 44, 56, 110, 1202, ... ([R1] section 4.2)."
        )
    return (depth - 2) // 6


def init_weights(model: nn.Module) -> None:
    # He initialisation [R1] 3.4, fan-out as in the authors' Torch code and torchvision.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(depth: int, shortcut: str = "A", num_classes: int = 10) -> CifarResNet:
    return CifarResNet(depth=depth, shortcut=shortcut, num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
