"""The K-way segmentation network Ω of CIS (Yang et al. 2020, Sec. 3, Eq. 2).

A ResNet trunk at output stride 4 followed by a DeepLab-v2 head (Chen et al. 2017): four
parallel 3×3 atrous convolutions from the trunk's features straight to K logits, summed
("ASPP-L" without the 1×1 branches). The logits are resized bilinearly to the input size and
a softmax over the K channels gives soft masks that sum to 1 at every pixel (Eq. 2).

Backbones (``backbone=``):
- ``"resnet50"`` (the paper): torchvision's ResNet-50, its last three stages dilated instead
  of strided so that the features stay at stride 4 (the authors' TF code runs a
  pre-activation ResNet-50 at output stride 4; see docs/methods/cis.md). ``width`` scales
  every stage (64 for the standard network).
- ``"resnet<6n+2>"`` (e.g. ``"resnet8"``, ``"resnet14"``): the CIFAR-style
  :class:`~objdecomp.nn.backbones.MiniResNet` (stride 4 already), for CPU-sized configs.

Used by CIS and by MONet as the paper re-implemented it for Table 1 (same network, MONet's loss).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from objdecomp.nn.backbones import MiniResNet


def dilated_resnet50_trunk(in_channels: int = 3, width: int = 64) -> nn.Module:
    """ResNet-50 without pooling/classifier, stages 2-4 dilated: ``[B, 32·width, H/4, W/4]``.

    torchvision's bottleneck blocks and initialisation; ``width = 64`` is the standard
    network (layout and parameter count of ``torchvision.models.resnet50`` up to layer4 with
    ``replace_stride_with_dilation=[True, True, True]``), smaller widths narrow every stage.
    """
    layers = [nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
              nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    inplanes, dilation = width, 1
    for stage, blocks in enumerate((3, 4, 6, 3)):
        planes = width * 2**stage
        previous, dilation = dilation, dilation * (2 if stage else 1)  # stride 2 -> dilation 2
        down = None
        if inplanes != planes * Bottleneck.expansion:
            down = nn.Sequential(nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, bias=False),
                                 nn.BatchNorm2d(planes * Bottleneck.expansion))
        stage_blocks = [Bottleneck(inplanes, planes, 1, down, dilation=previous)]
        inplanes = planes * Bottleneck.expansion
        stage_blocks += [Bottleneck(inplanes, planes, dilation=dilation) for _ in range(blocks - 1)]
        layers.append(nn.Sequential(*stage_blocks))
    trunk = nn.Sequential(*layers)
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):  # torchvision's ResNet initialisation
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    trunk.out_channels = inplanes
    return trunk


class DeepLabV2Head(nn.Module):
    """Σ_d conv3×3_dilation-d(features): parallel atrous branches to K logits, summed."""

    def __init__(self, in_channels: int, num_masks: int, dilations: Sequence[int] = (2, 4, 6, 8)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_masks, 3, padding=d, dilation=d) for d in dilations)

    def forward(self, features: Tensor) -> Tensor:
        return sum(branch(features) for branch in self.branches)


class SegmentationNet(nn.Module):
    """Ω: image ``[B, C, H, W]`` in [0, 1] -> K mask logits ``[B, K, H, W]`` (Eq. 2).

    Args:
        in_channels: image channels.
        num_masks: K (6 in the paper's text; the authors' code uses 5 on Multi-dSprites and
            Multi-Texture, 3 in the cycle-consistency experiment).
        backbone: ``"resnet50"`` or ``"resnet<6n+2>"`` (see the module docstring).
        width: channels of the trunk's first stage (64 for ResNet-50, 16 for a mini ResNet).
        dilations: the head's atrous rates ([2, 4, 6, 8] synthetic sets, [6, 12, 18, 24]
            Flying Animals in the authors' code).
        input_size: side the image is resized to before the trunk (the authors upsample 64×64
            sets to 128); ``None`` keeps the input size.

    ``masks(images)`` returns the softmax over K; ``forward`` returns the logits.
    """

    def __init__(self, in_channels: int = 3, num_masks: int = 6, backbone: str = "resnet50",
                 width: int = 64, dilations: Sequence[int] = (2, 4, 6, 8),
                 input_size: int | None = None):
        super().__init__()
        if backbone == "resnet50":
            self.trunk = dilated_resnet50_trunk(in_channels, width)
        elif backbone.startswith("resnet") and backbone[len("resnet"):].isdigit():
            self.trunk = MiniResNet(in_channels, depth=int(backbone[len("resnet"):]), width=width)
        else:
            raise ValueError(f"unknown segmentation backbone '{backbone}'")
        self.head = DeepLabV2Head(self.trunk.out_channels, num_masks, dilations)
        self.num_masks, self.input_size = num_masks, input_size

    def forward(self, images: Tensor) -> Tensor:
        size = images.shape[-2:]
        x = images * 2 - 1  # the authors' code feeds [-1, 1]
        if self.input_size is not None and tuple(size) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        logits = self.head(self.trunk(x))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def masks(self, images: Tensor) -> Tensor:
        """Soft masks ``[B, K, H, W]`` summing to 1 over K, in float32 (a softmax in bf16 under
        autocast misses 1 by up to 3e-3)."""
        return self(images).float().softmax(1)
