"""ReDO's four networks as the authors' code builds them (Chen et al. 2019, §4; the places where
the code and the text differ are listed in docs/methods/redo.md).

- :class:`MaskNetwork` F: PSPNet-inspired fully convolutional mask extractor, no spectral norm.
- :class:`RegionGenerator` G_k: SAGAN-style generator conditioned on the region's mask and
  its own code z_k through conditional normalisation.
- :class:`ResidualEncoder`: SAGAN-style discriminator D (one output) and, without
  attention, the z-reconstruction network δ (one head of ``z_dim`` outputs per region on a
  shared trunk: "all parameters of the different δ_k are shared except for their last
  layers", §4).
- :class:`ReDONetworks`: the four together, plus the redrawing of §3.3.

Images inside these networks live in [-1, 1] (the generators end with tanh).
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objdecomp.nn.gan import (ConditionalNorm2d, DownBlock, InstanceNorm2d, SelfAttention, UpBlock,
                              orthogonal_init_, same_layout, sn_conv2d)


def _num_levels(image_size: int) -> int:
    """Number of ×2 resolution steps between 4×4 and ``image_size`` (a power of two ≥ 8)."""
    levels = int(round(math.log2(image_size / 4)))
    if levels < 1 or 4 * 2 ** levels != image_size:
        raise ValueError(f"ReDO's generator and discriminator need a power-of-two image size "
                         f">= 8, got {image_size}")
    return levels


class _ResidualIN(nn.Module):
    """F's residual block: ``relu(IN(x + conv(relu(IN(conv(x))))))`` (CycleGAN-like)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            InstanceNorm2d(channels, affine=True), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1))
        self.post = nn.Sequential(InstanceNorm2d(channels, affine=True), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        return self.post(x + self.body(x))


def _conv_in_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> List[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
            InstanceNorm2d(out_channels, affine=True), nn.ReLU()]


class MaskNetwork(nn.Module):
    """F: image ``[B, C, H, W]`` -> soft masks ``[B, n, H, W]`` summing to 1 over regions.

    Encoder to 1/4 resolution (7×7 conv, two stride-2 convs), residual blocks, a pyramid
    pooling module (PSPNet: averages over 1², 2², 3², 6² cells (:func:`pyramid_pool`), each
    reduced to one channel and upsampled back, concatenated to the features), a decoder back
    to full resolution,
    and a softmax over the n regions at temperature ``temperature``. For n = 2 the code's
    sigmoid of one logit equals the softmax of ``[logit, 0]``, which is what we compute.

    Args:
        channels: image channels.
        num_regions: n.
        width: feature channels at 1/4 resolution (``nfM`` in the code, 64).
        num_res_blocks: residual blocks at 1/4 resolution (3 in the code).
        temperature: softmax temperature (1 in the code).
        downsampling: stride-2 convolutions in the encoder, each matched by a ×2 step in the
            decoder (2 in the code; 1 keeps twice finer features for small images).
    """

    POOL_SIZES = (1, 2, 3, 6)

    def __init__(self, channels: int = 3, num_regions: int = 2, width: int = 64,
                 num_res_blocks: int = 3, temperature: float = 1.0, downsampling: int = 2):
        super().__init__()
        if downsampling not in (1, 2):
            raise ValueError(f"F's encoder downsamples once or twice (the code), got {downsampling}")
        self.num_regions, self.temperature = num_regions, temperature
        stem = width // 2 ** downsampling
        down: List[nn.Module] = []
        for step in range(downsampling):  # width/4 -> width/2 -> width in the code
            down += _conv_in_relu(stem * 2 ** step, stem * 2 ** (step + 1), 3, stride=2)
        self.encoder = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(channels, stem, 7, bias=False),
            InstanceNorm2d(stem, affine=True), nn.ReLU(), *down,
            *[_ResidualIN(width) for _ in range(num_res_blocks)])
        self.pyramid = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in self.POOL_SIZES)
        wide = width + len(self.POOL_SIZES)
        up: List[nn.Module] = []
        for step in range(downsampling):  # wide -> wide/2 -> wide/4 in the code
            up += [nn.Upsample(scale_factor=2, mode="nearest"),
                   *_conv_in_relu(wide // 2 ** step, wide // 2 ** (step + 1), 3)]
        logits = 1 if num_regions == 2 else num_regions
        self.decoder = nn.Sequential(*up, nn.ReflectionPad2d(3),
                                     nn.Conv2d(wide // 2 ** downsampling, logits, 7))

    def logits(self, images: Tensor) -> Tensor:
        """Region logits ``[B, n, H, W]`` (before the temperature)."""
        logits = self.decoder(self.context(self.encoder(images)))
        if self.num_regions == 2:
            logits = torch.cat([logits, torch.zeros_like(logits)], dim=1)
        return logits

    def context(self, features: Tensor) -> Tensor:
        """The pyramid pooling module: ``features`` and one channel per pooling level,
        upsampled back to their size (bilinear)."""
        size = features.shape[-2:]
        pooled = [F.interpolate(conv(pyramid_pool(features, cells)), size=size, mode="bilinear",
                                align_corners=False)
                  for conv, cells in zip(self.pyramid, self.POOL_SIZES)]
        return torch.cat([features, *pooled], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        return torch.softmax(self.logits(images) / self.temperature, dim=1)


def pyramid_pool(features: Tensor, cells: int) -> Tensor:
    """Average pooling over non-overlapping windows of ``size // cells`` pixels, as the
    authors' code pools (not adaptive pooling): on F's 32×32 features, 3 cells are 10-pixel
    windows and 6 cells 5-pixel ones, so the last 2 rows and columns never enter those
    levels. Windows are at least one pixel (features smaller than ``cells``)."""
    window = [max(size // cells, 1) for size in features.shape[-2:]]
    return F.avg_pool2d(features, window)


class RegionGenerator(nn.Module):
    """G_k(M_k, z_k): appearance ``[B, C, H, W]`` in [-1, 1] of region k, drawn from z_k.

    A linear map of z to a 4×4 grid, residual up-blocks with conditional normalisation on
    z (instance norm in the authors' code, batch norm in §4's text) and the mask average-pooled to each
    block's input size concatenated to its features, SAGAN self-attention before the last
    block, then a conditional norm, the full mask, a 3×3 convolution and tanh. Widths halve
    from ``16 * width`` at 4×4 (for 128²) to ``width`` at full size.
    """

    def __init__(self, image_size: int = 128, channels: int = 3, z_dim: int = 32,
                 width: int = 64, attention: bool = True, norm: str = "instance"):
        super().__init__()
        levels = _num_levels(image_size)
        widths = [width * 2 ** (levels - 1 - k) for k in range(levels)]
        self.start_width = widths[0]
        self.dense = nn.Linear(z_dim, 16 * widths[0])
        ins = [widths[0]] + widths[:-1]
        self.blocks = nn.ModuleList(UpBlock(i, o, z_dim, side_channels=1, norm=norm)
                                    for i, o in zip(ins, widths))
        self.attention = SelfAttention(ins[-1]) if attention else None
        self.out_norm = ConditionalNorm2d(width, z_dim, norm)
        self.out_conv = sn_conv2d(width + 1, channels, 3)

    def forward(self, mask: Tensor, z: Tensor) -> Tensor:
        """``mask`` ``[B, 1, H, W]``, ``z`` ``[B, z_dim]`` -> appearance ``[B, C, H, W]``."""
        x = self.dense(z).view(z.shape[0], self.start_width, 4, 4)
        for index, block in enumerate(self.blocks):
            if index == len(self.blocks) - 1 and self.attention is not None:
                x = self.attention(x)
            side = F.adaptive_avg_pool2d(mask, x.shape[-2:])
            x = block(x, z, side)
        x = F.relu(self.out_norm(x, z), inplace=True)
        return torch.tanh(self.out_conv(torch.cat([x, same_layout(mask, x)], dim=1)))


class ResidualEncoder(nn.Module):
    """SAGAN-style residual encoder: image -> ``[B, out_features]``.

    Down-blocks from ``width`` to ``16 * width`` (for 128²) channels at 4×4, optional
    self-attention after the first block, a last block without pooling, global sum pooling
    and a linear layer (plain, as in the code). As D: ``out_features = 1``; as δ:
    ``out_features = n * z_dim``, whose n row-blocks are the per-region heads δ_k.
    """

    def __init__(self, image_size: int = 128, channels: int = 3, width: int = 64,
                 out_features: int = 1, attention: bool = False):
        super().__init__()
        levels = _num_levels(image_size)
        widths = [width * 2 ** k for k in range(levels)]
        blocks: List[nn.Module] = [DownBlock(channels, widths[0], first=True)]
        if attention:
            blocks.append(SelfAttention(widths[0]))
        blocks += [DownBlock(i, o) for i, o in zip(widths[:-1], widths[1:])]
        blocks.append(DownBlock(widths[-1], widths[-1], downsample=False))
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(widths[-1], out_features)

    def forward(self, images: Tensor) -> Tensor:
        return self.linear(self.blocks(images).sum(dim=(2, 3)))


class ReDONetworks(nn.Module):
    """F, the n generators G_k, D and δ, built and initialised together.

    Rebuilding with the same arguments and loading the state dict is how a collapsed run
    restarts (callbacks/collapse.py), so everything the networks are lives here.

    ``sn_init``: the initialisation of the spectrally normalised layers (every convolution
    of G_k, D and δ). ``"default"`` keeps PyTorch's, which is what the authors' runs had: their
    code moves the networks to the GPU before its orthogonal initialisation, which then writes
    into a stale copy of those layers' weights (docs/methods/redo.md). ``"orthogonal"`` is
    §4's text. The other layers (F, the linear maps of z, D's and δ's last linear layers) are
    orthogonally initialised either way.
    """

    def __init__(self, image_size: int = 128, channels: int = 3, num_regions: int = 2,
                 z_dim: int = 32, mask_width: int = 64, mask_res_blocks: int = 3,
                 temperature: float = 1.0, mask_downsampling: int = 2, gen_width: int = 64,
                 disc_width: int = 64, z_net_width: int = 64, gen_attention: bool = True,
                 disc_attention: bool = True, cond_norm: str = "instance", init_gain: float = 0.8,
                 sn_init: str = "default"):
        super().__init__()
        if sn_init not in ("default", "orthogonal"):
            raise ValueError(f"sn_init must be 'default' (the authors' runs) or 'orthogonal' "
                             f"(§4), got {sn_init!r}")
        self.num_regions, self.z_dim = num_regions, z_dim
        self.mask = MaskNetwork(channels, num_regions, mask_width, mask_res_blocks, temperature,
                                mask_downsampling)
        self.generators = nn.ModuleList(
            RegionGenerator(image_size, channels, z_dim, gen_width, gen_attention, cond_norm)
            for _ in range(num_regions))
        self.discriminator = ResidualEncoder(image_size, channels, disc_width, 1, disc_attention)
        self.z_net = ResidualEncoder(image_size, channels, z_net_width, num_regions * z_dim)
        orthogonal_init_(self, init_gain, spectral_normalised=sn_init == "orthogonal")

    def reconstruct_z(self, images: Tensor) -> Tensor:
        """δ: ``[B, n, z_dim]``, the code of every region inferred from ``images``."""
        return self.z_net(images).view(images.shape[0], self.num_regions, self.z_dim)

    def redraw(self, images: Tensor, masks: Tensor, z: Tensor, region: Tensor) -> Tensor:
        """G_F(I, z_i, i) of §3.3: region ``region[b]`` of image b redrawn from ``z[b]``.

        ``(1 - M_i) * I + M_i * G_i(M_i, z_i)``, which is ``sum_k M_k * V_k`` with
        ``V_k = I`` for every ``k != i`` since the masks sum to one. Each generator runs
        only on the images whose region it redraws.

        Args:
            images: ``[B, C, H, W]`` in [-1, 1].
            masks: ``[B, n, H, W]`` from F.
            z: ``[B, z_dim]``.
            region: ``[B]`` int64 in ``[0, n)``.
        """
        mask = masks.gather(1, region[:, None, None, None].expand(-1, 1, *masks.shape[2:]))
        appearance = torch.zeros_like(images)
        for k, generator in enumerate(self.generators):
            chosen = (region == k).nonzero(as_tuple=True)[0]
            if chosen.numel():
                drawn = generator(mask[chosen], z[chosen])  # bf16 under autocast
                appearance = appearance.index_put((chosen,), drawn.to(appearance.dtype))
        return images + mask * (appearance - images)

    def redraw_all(self, images: Tensor, masks: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """Every region redrawn in one pass, as the authors' code trains (``redraw="all"``).

        Args:
            z: ``[B, n, z_dim]``, one code per region.

        Returns:
            ``[B, n, C, H, W]`` composites (region k redrawn in entry k) and the fully
            generated image ``sum_k M_k * G_k(M_k, z_k)`` ``[B, C, H, W]`` that the code feeds to δ.
        """
        redrawn, generated = [], torch.zeros_like(images)
        for k, generator in enumerate(self.generators):
            mask = masks[:, k : k + 1]
            appearance = generator(mask, z[:, k])
            redrawn.append(images + mask * (appearance - images))
            generated = generated + mask * appearance
        return torch.stack(redrawn, dim=1), generated

    def region_appearance(self, masks: Tensor, z: Tensor, region: int) -> Tensor:
        """G_region(M_region, z) ``[B, C, H, W]``, for pictures."""
        return self.generators[region](masks[:, region : region + 1], z)
