"""Encoders and MLP heads shared by the methods.

- :class:`MiniResNet`: the CIFAR ResNets of He et al. (depth 6n+2; ResNet-32 has n = 5): a 3×3
  stem of 16 channels, three stages of n basic blocks (16/32/64 channels, strides 1/2/2) and
  parameter-free "option A" shortcuts (strided subsampling, zero-padded channels).
- :func:`resnet18_trunk`: torchvision's ResNet-18 without its classifier, randomly initialised.
- :class:`Encoder`: a trunk followed by adaptive average pooling to ``pool×pool`` and flattening.
  DTI-Sprites (Sec. 3.3) pools globally (64 or 512 features) and, beyond 3 objects, to 4×4×64
  (mini ResNet-32) or 2×2×512 (ResNet-18) to keep where things are.
- :class:`MLP` and :class:`GroupedMLP`: heads with two hidden layers (128 units in Sec. 3.3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet18


class BasicBlock(nn.Module):
    """3×3-3×3 residual block with an option-A (parameter-free) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.extra = stride, out_channels - in_channels

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra > 0:
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class MiniResNet(nn.Module):
    """CIFAR-style ResNet trunk of depth ``6n + 2`` (32: mini ResNet-32 of DTI-Sprites).

    Returns the third stage's ``[B, 64·width/16, H/4, W/4]`` feature map.
    """

    def __init__(self, in_channels: int = 3, depth: int = 32, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        layers, channels = [], width
        for stage, stride in enumerate((1, 2, 2)):
            out = width * 2**stage
            for b in range(blocks):
                layers.append(BasicBlock(channels, out, stride if b == 0 else 1))
                channels = out
        self.stages = nn.Sequential(*layers)
        self.out_channels = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He et al.'s fan-in normal, as DTI-Sprites' code
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


def resnet18_trunk(in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-18 up to its last stage (512 channels), no pretraining."""
    net = resnet18(weights=None)
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                          net.layer1, net.layer2, net.layer3, net.layer4)
    trunk.out_channels = 512
    return trunk


class Encoder(nn.Module):
    """Trunk + adaptive average pooling to ``pool×pool`` + flatten: ``[B, C, H, W] -> [B, F]``.

    Args:
        name: ``"resnet18"`` or ``"resnet<6n+2>"`` (mini ResNet, e.g. ``"resnet32"``, ``"resnet8"``).
        in_channels: image channels.
        pool: output side of the adaptive pooling (1 = global average pooling).
        width: channels of the mini ResNet's first stage (16 in the paper).
    """

    def __init__(self, name: str = "resnet32", in_channels: int = 3, pool: int = 1, width: int = 16):
        super().__init__()
        if name == "resnet18":
            self.trunk = resnet18_trunk(in_channels)
        elif name.startswith("resnet"):
            self.trunk = MiniResNet(in_channels, depth=int(name[len("resnet"):]), width=width)
        else:
            raise ValueError(f"unknown encoder '{name}'")
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.out_features = self.trunk.out_channels * pool * pool

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.trunk(x)).flatten(1)


class MLP(nn.Sequential):
    """``in → hidden → hidden → out`` with ReLUs; optionally a zero-initialised last layer."""

    def __init__(self, in_features: int, out_features: int, hidden: int = 128, zero_last: bool = True):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_features))
        if zero_last:
            nn.init.zeros_(self[-1].weight)
            nn.init.zeros_(self[-1].bias)


class GroupedMLP(nn.Module):
    """G independent :class:`MLP` heads reading the same input, run as batched matmuls.

    DTI-Sprites predicts transformation parameters with one MLP per layer (and per sprite for
    sprite-specific transformations); looping over dozens of small MLPs costs more than the
    arithmetic, so the G heads are stored as stacked weights. The last layer starts at zero,
    so every head starts at the identity transformation (appendix C.1).

    ``forward``: ``[B, in] -> [B, G, out]``.
    """

    def __init__(self, groups: int, in_features: int, out_features: int, hidden: int = 128,
                 zero_last: bool = True):
        super().__init__()
        self.groups, self.out_features = groups, out_features
        self.first = nn.Linear(in_features, groups * hidden)  # G first layers as one matmul
        self.weight2, self.bias2 = self._stacked(groups, hidden, hidden)
        self.weight3, self.bias3 = self._stacked(groups, hidden, out_features)
        if zero_last:
            nn.init.zeros_(self.weight3)
            nn.init.zeros_(self.bias3)

    @staticmethod
    def _stacked(groups: int, fan_in: int, fan_out: int):
        bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per group
        weight = nn.Parameter(torch.empty(groups, fan_in, fan_out).uniform_(-bound, bound))
        bias = nn.Parameter(torch.empty(groups, fan_out).uniform_(-bound, bound))
        return weight, bias

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.relu(self.first(x)).unflatten(1, (self.groups, -1))  # [B, G, hidden]
        hidden = F.relu(torch.einsum("bgi,gio->bgo", hidden, self.weight2) + self.bias2)
        return torch.einsum("bgi,gio->bgo", hidden, self.weight3) + self.bias3

    @torch.no_grad()
    def copy_group(self, target: int, source: int) -> None:
        """Make head ``target`` a copy of head ``source`` (sprite reassignment, C.2)."""
        hidden = self.weight2.shape[1]
        rows = slice(target * hidden, (target + 1) * hidden)
        self.first.weight[rows] = self.first.weight[source * hidden : (source + 1) * hidden]
        self.first.bias[rows] = self.first.bias[source * hidden : (source + 1) * hidden]
        for param in (self.weight2, self.bias2, self.weight3, self.bias3):
            param[target] = param[source]
