"""The conditional inpainting network ψ of CIS (Yang et al. 2020, Sec. 3 and 4.2), and its
condition, the binarised edge map ∇̄x.

ψ (adapted by the paper from Yang et al. 2019, "UMODCIS"): two symmetric convolutional
encoders, one for the binarised edge map of the *whole* image and one for the masked image
(the context), and a joint decoder with skip connections from both encoders that predicts the
image coarse to fine (an estimate at each of five scales, each upsampled into the next).
Layout as in the authors' code (docs/methods/cis.md): encoders 7×7/2 → 5×5/2 → 5×5/2 → 3×3 →
3×3/2 → 3×3 → 3×3/2 → 3×3 → 3×3/2 with widths w·(1, 2, 4, 4, 8, 8, 8, 8, 8) (w = 32 in the
code), leaky ReLU, no normalisation; each decoder step is a bilinear resize and a 4×4 conv.

The edge branch depends on the image only, so for K masks of one image it runs once, not K
times (the authors' code runs the whole network per mask; same result).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SOBEL_Y = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])

# (kernel, stride, width multiple) of each encoder layer; the skips leave after layers 0, 1, 3, 5, 7.
ENCODER = ((7, 2, 1), (5, 2, 2), (5, 2, 4), (3, 1, 4), (3, 2, 8), (3, 1, 8), (3, 2, 8), (3, 1, 8),
           (3, 2, 8))
SKIPS = (7, 5, 3, 1, 0)  # deepest first: the decoder's scales h/32, h/16, h/8, h/4, h/2


def sobel(images: Tensor) -> Tensor:
    """Sobel responses ``[B, C, 2, H, W]`` (d/dy, d/dx), with reflected borders."""
    kernel = torch.stack([SOBEL_Y, SOBEL_Y.T]).to(images)[:, None]  # [2, 1, 3, 3]
    b, c, h, w = images.shape
    padded = F.pad(images.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernel).reshape(b, c, 2, h, w)


def binary_edge_map(images: Tensor, threshold: float = 0.5, normalize: bool = True,
                    scale: float = 1.0) -> Tensor:
    """∇̄x, the binarised edge map ``[B, 2, H, W]`` (vertical, horizontal) of images in [0, 1].

    ``normalize=True`` (the authors' synthetic sets): |Sobel| summed over colour channels,
    min-max normalised per image and direction, then ``> threshold`` (0.5 Multi-Texture,
    1e-4 Multi-dSprites, 0.2 Objects Room). ``normalize=False`` (Flying Animals): signed
    Sobel summed over channels, divided by ``scale`` (15), and ``|·| > threshold`` (0.04).
    """
    responses = sobel(images.float())
    if normalize:
        d = responses.abs().sum(1)  # [B, 2, H, W]
        low = d.amin((-2, -1), keepdim=True)
        span = d.amax((-2, -1), keepdim=True) - low
        d = torch.where(span > 0, (d - low) / span.clamp_min(1e-12), torch.zeros_like(d))
        return (d > threshold).to(images.dtype)
    return ((responses.sum(1) / scale).abs() > threshold).to(images.dtype)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Module:
    """A convolution padded as TensorFlow's "SAME" (an even kernel pads one more after)."""
    if kernel % 2 == 0:
        before = (kernel - 1) // 2
        return nn.Sequential(nn.ZeroPad2d((before, kernel - 1 - before) * 2),
                             nn.Conv2d(in_channels, out_channels, kernel, stride))
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2)


class InpaintingEncoder(nn.Module):
    """One of ψ's two encoders; returns the features after every layer."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        layers, channels = [], in_channels
        for kernel, stride, multiple in ENCODER:
            layers.append(_conv(channels, width * multiple, kernel, stride))
            channels = width * multiple
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> List[Tensor]:
        features = []
        for layer in self.layers:
            x = F.leaky_relu(strided_conv(layer, x), 0.2)
            features.append(x)
        return features


def strided_conv(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)``, with the stride dropped on a 1x1 map, where it changes nothing ('same'
    padding): oneDNN's bf16 weight gradient of a strided convolution over a 1x1 input reads
    uninitialised memory (torch 2.14 on CPU: non-finite in about half of the calls;
    tests/test_cis.py), which is what the deepest layers see on images of 32 px or less."""
    if isinstance(conv, nn.Conv2d) and x.shape[-2:] == (1, 1) and conv.stride != (1, 1):
        return F.conv2d(x, conv.weight, conv.bias, 1, conv.padding, conv.dilation, conv.groups)
    return conv(x)


class Inpainter(nn.Module):
    """ψ(Ω_k, x·(1 − Ω_k); ∇̄x): the image predicted from the context outside a soft mask.

    Args:
        channels: image channels.
        width: w, channels of the encoders' first layer (32 in the authors' code).
        edge_channels: channels of the condition (2: the vertical and horizontal edge maps).

    ``forward(images, masks, edges)`` with images ``[B, C, H, W]`` in [0, 1], masks
    ``[B, K, H, W]`` (the regions to inpaint) and edges ``[B, 2, H, W]`` returns the K
    inpainted images ``[B, K, C, H, W]`` (not clamped: the code adds 0.5 with no sigmoid).
    """

    def __init__(self, channels: int = 3, width: int = 32, edge_channels: int = 2):
        super().__init__()
        self.channels = channels
        # The context: the masked image centred at 0, a plane of ones (marks the border under
        # zero padding) and the visible region 1 − m.
        self.context_encoder = InpaintingEncoder(channels + 2, width)
        self.edge_encoder = InpaintingEncoder(edge_channels, width)
        skip = [width * ENCODER[i][2] for i in SKIPS]  # channels of each skip, deepest first
        up_out = [8 * width, 8 * width, 4 * width, 2 * width, width]
        self.up = nn.ModuleList()
        self.predict = nn.ModuleList()
        self.up_prediction = nn.ModuleList()
        previous = 2 * ENCODER[-1][2] * width  # the two bottlenecks, concatenated
        for scale, (out, s) in enumerate(zip(up_out, skip)):
            self.up.append(_conv(previous, out, 4))
            joined = out + 2 * s + (channels if scale else 0)
            self.predict.append(_conv(joined, channels, 5 if scale == len(skip) - 1 else 3))
            if scale:
                self.up_prediction.append(_conv(channels, channels, 4))
            previous = joined

    def encode_edges(self, edges: Tensor) -> List[Tensor]:
        return self.edge_encoder(edges)

    def forward(self, images: Tensor, masks: Tensor, edges: Tensor,
                edge_features: Optional[List[Tensor]] = None) -> Tensor:
        b, k = masks.shape[:2]
        context = self.context_input(images[:, None], masks[:, :, None]).flatten(0, 1)
        if edge_features is None:
            edge_features = self.encode_edges(edges)
        edge_features = [f.repeat_interleave(k, 0) for f in edge_features]
        out = self.decode(self.context_encoder(context), edge_features, images.shape[-2:])
        return out.unflatten(0, (b, k))

    def unconditioned(self, images: Tensor, edges: Tensor,
                      edge_features: Optional[List[Tensor]] = None) -> Tensor:
        """ψ(∅): the prediction from no context at all (a zero image, everything masked),
        ``[B, C, H, W]``: the code's normaliser of the segmenter's loss."""
        ones = images.new_ones(images.shape[0], 1, *images.shape[-2:])
        return self(torch.zeros_like(images), ones, edges, edge_features)[:, 0]

    @staticmethod
    def context_input(images: Tensor, masks: Tensor) -> Tensor:
        visible = 1 - masks
        centred = (images - 0.5) * visible
        return torch.cat([centred, torch.ones_like(visible), visible], -3)

    def decode(self, context: List[Tensor], edges: List[Tensor], size: Tuple[int, int]) -> Tensor:
        x = torch.cat([context[-1], edges[-1]], 1)
        prediction = None
        for scale, layer in enumerate(SKIPS):
            skip_size = context[layer].shape[-2:]
            x = F.leaky_relu(self.up[scale](_resize(x, skip_size)), 0.2)
            parts = [x, context[layer], edges[layer]]
            if prediction is not None:  # the coarser estimate, upsampled (coarse to fine)
                parts.append(self.up_prediction[scale - 1](_resize(prediction, skip_size)))
            x = torch.cat(parts, 1)
            prediction = self.predict[scale](x)
        return _resize(prediction, size) + 0.5


def _resize(x: Tensor, size) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
