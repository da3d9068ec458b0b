"""DTI-Sprites' networks (Sec. 3.1, 3.3): sprites, backgrounds, transformers, occlusion head.

One encoder reads the image once; MLP heads predict, per image, the layer transformations
T^lay (one parameter set per layer), the sprite transformations T^spr (one per layer and
sprite, Eq. 3), the background transformations T^bkg (one per prototype) and the occlusion
matrix. :meth:`DTISpritesNet.render` turns sprites into layers: the colour modules act at
sprite resolution (they are pointwise, so they commute with the warp) and all spatial modules
of T^spr and T^lay are fused into one sampling grid, so each sprite is resampled once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from objdecomp.compositing import add_background, fixed_occlusion, occlusion_from_values
from objdecomp.nn.backbones import MLP, Encoder
from objdecomp.nn.transforms import TransformSequence, inside, pixel_grid, sample, softclip


@dataclass
class Prediction:
    """Per-image outputs of the heads (lists hold one tensor per active transformation module)."""

    layer: List[Tensor]  # [B, L, d]
    sprite: List[Tensor]  # [B, L, K, d]
    background: List[Tensor]  # [B, K', d]
    occlusion: Tensor  # [B, L+1, L+1], background = layer 0 behind every object layer


def gaussian_window(height: int, width: int, std: float) -> Tensor:
    """``[H, W]`` centred Gaussian with peak 1 and ``std`` in pixels (mask init, C.2)."""
    ys = torch.arange(height) - (height - 1) / 2
    xs = torch.arange(width) - (width - 1) / 2
    return torch.exp(-(ys[:, None] ** 2 + xs[None] ** 2) / (2 * std**2))


class Sprites(nn.Module):
    """K learnable RGBA sprites: appearances start at a constant, masks at a Gaussian (C.2).

    Appearances are soft-clipped when read; masks are read raw, because the mask noise of C.3
    is added before the soft clip (:meth:`DTISpritesNet.render`).
    """

    def __init__(self, num_sprites: int, channels: int, size: Tuple[int, int], mask_std: float,
                 appearance_init: float = 0.9):
        super().__init__()
        self.appearance = nn.Parameter(torch.full((num_sprites, channels, *size), appearance_init))
        window = gaussian_window(*size, mask_std)
        self.masks = nn.Parameter(window.expand(num_sprites, 1, *size).clone())

    def rgba(self) -> Tensor:
        """``[K, C+1, h, w]``: soft-clipped appearance and raw mask."""
        return torch.cat([softclip(self.appearance), self.masks], 1)

    @torch.no_grad()
    def copy_sprite(self, target: int, source: int, noise: float) -> None:
        self.appearance[target] = self.appearance[source] + noise * torch.randn_like(self.appearance[source])
        self.masks[target] = self.masks[source]


class DTISpritesNet(nn.Module):
    """Encoder, heads, sprites and backgrounds of DTI-Sprites, and the rendering of layers.

    Args:
        channels, image_size: image facts.
        num_sprites, num_layers, num_backgrounds: K, L and K' (K' = 0: a black background).
        sprite_size: side of the sprites in pixels.
        mask_std: std (pixels) of the Gaussian mask initialisation.
        layer_transforms, sprite_transforms, background_transforms: T^lay, T^spr and T^bkg as
            :func:`~objdecomp.nn.transforms.parse_sequence` strings (Table 6, with curriculum).
        learn_occlusion: predict the occlusion matrix (Sec. 3.2) or keep the fixed order.
        encoder, encoder_pool, encoder_width: :class:`~objdecomp.nn.backbones.Encoder` settings.
        hidden: hidden units of every MLP head (128 in Sec. 3.3).
    """

    def __init__(self, channels: int, image_size: int, num_sprites: int, num_layers: int,
                 num_backgrounds: int, sprite_size: int, mask_std: float, layer_transforms: str,
                 sprite_transforms: str, background_transforms: str, learn_occlusion: bool,
                 encoder: str, encoder_pool: int, encoder_width: int = 16, hidden: int = 128):
        super().__init__()
        self.channels, self.image_size, self.sprite_size = channels, image_size, sprite_size
        self.num_sprites, self.num_layers, self.num_backgrounds = num_sprites, num_layers, num_backgrounds
        self.encoder = Encoder(encoder, channels, encoder_pool, encoder_width)
        features, ratio = self.encoder.out_features, sprite_size / image_size
        self.layer_tsf = TransformSequence(layer_transforms, features, num_layers, channels,
                                           (ratio, ratio), hidden)
        self.sprite_tsf = TransformSequence(sprite_transforms, features, num_layers * num_sprites,
                                            channels, hidden=hidden)
        self.background_tsf = TransformSequence(background_transforms if num_backgrounds else "",
                                                features, max(num_backgrounds, 1), channels,
                                                hidden=hidden)
        self.sprites = Sprites(num_sprites, channels, (sprite_size, sprite_size), mask_std)
        self.backgrounds = nn.Parameter(torch.full((num_backgrounds, channels, image_size, image_size), 0.5))
        pairs = num_layers * (num_layers - 1) // 2
        # Zero-initialised last layer: every δ starts at 0.5 (as in the authors' code).
        self.occlusion_head = MLP(features, pairs, hidden) if learn_occlusion and pairs else None
        self.register_buffer("fixed_occlusion", add_background(fixed_occlusion(num_layers)),
                             persistent=False)

    @property
    def sequences(self) -> List[TransformSequence]:
        return [self.layer_tsf, self.sprite_tsf, self.background_tsf]

    def predict(self, images: Tensor) -> Prediction:
        """Run the encoder once and every head on its features."""
        features = self.encoder(images).float()
        b, num_layers = images.shape[0], self.num_layers
        sprite = [p.unflatten(1, (num_layers, self.num_sprites)) for p in self.sprite_tsf.predict(features)]
        background = self.background_tsf.predict(features) if self.num_backgrounds else []
        if self.occlusion_head is not None:
            values = torch.sigmoid(self.occlusion_head(features))
            occlusion = add_background(occlusion_from_values(values, num_layers))
        else:
            occlusion = self.fixed_occlusion.expand(b, -1, -1)
        return Prediction(self.layer_tsf.predict(features), sprite, background, occlusion)

    def mask_noise(self, amplitude: float, device=None) -> Tensor:
        """``[K, 1, H, W]`` uniform noise in [−a, a], one field per sprite shared by all
        layers and images of a batch (C.3; the authors' code draws it the same way)."""
        size = self.image_size
        return (torch.rand(self.num_sprites, 1, size, size, device=device) * 2 - 1) * amplitude

    def render(self, pred: Prediction, ids: Optional[Tensor] = None, noise: Optional[Tensor] = None,
               frozen: bool = False) -> Tuple[Tensor, Tensor]:
        """Transformed sprites as image-sized layers (Eq. 3).

        Args:
            pred: the heads' outputs.
            ids: ``[B, L]`` sprite of each layer (``K`` = the empty sprite), or None for every
                sprite in every layer (the candidates of the selection).
            noise: :meth:`mask_noise` field added to the masks where the sprite lands (C.3).
            frozen: detach the sprites (C.2: frozen during the first epochs).

        Returns:
            colours ``[B, L, M, C, H, W]`` and alphas ``[B, L, M, 1, H, W]``, M = K or 1.
        """
        b, num_layers, k, c = pred.occlusion.shape[0], self.num_layers, self.num_sprites, self.channels
        rgba = self.sprites.rgba()
        rgba = rgba.detach() if frozen else rgba
        if ids is None:
            sprites, sprite_params = rgba.expand(b, num_layers, k, -1, -1, -1), pred.sprite
        else:
            rgba = torch.cat([rgba, torch.zeros_like(rgba[:1])])  # the empty sprite, s_0 = 0
            sprites = rgba[ids][:, :, None]
            index = ids.clamp(max=k - 1)[:, :, None, None]
            sprite_params = [p.gather(2, index.expand(-1, -1, 1, p.shape[-1])) for p in pred.sprite]
        layer_params = [p[:, :, None] for p in pred.layer]
        if self.layer_tsf.has_color or self.sprite_tsf.has_color:
            colour = self.sprite_tsf.color(sprites[:, :, :, :c], sprite_params)
            colour = softclip(self.layer_tsf.color(colour, layer_params))
            sprites = torch.cat([colour, sprites[:, :, :, c:].expand_as(colour[:, :, :, :1])], 3)
        layers, canvas = self._warp(sprites, layer_params, sprite_params)
        colours, alphas = layers[:, :, :, :c], layers[:, :, :, c:]
        if noise is not None:
            noise = noise if ids is None else torch.cat([noise, torch.zeros_like(noise[:1])])[ids][:, :, None]
            alphas = torch.addcmul(alphas, noise, canvas)
        alphas = softclip(alphas)
        if ids is not None:
            alphas = alphas * (ids != k)[:, :, None, None, None, None]
        return colours, alphas

    def _warp(self, sprites: Tensor, layer_params: List[Tensor], sprite_params: List[Tensor]
              ) -> Tuple[Tensor, Tensor]:
        """One fused resampling of ``[B, L, M, C+1, h, w]`` sprites onto the canvas.

        Returns the layers ``[B, L, M, C+1, H, W]`` (zero where an intermediate point left its
        image) and the canvas ``[., ., ., 1, H, W]`` marking where the sprite frame lands.
        """
        size, (b, num_layers, m) = self.image_size, sprites.shape[:3]
        stages = self.layer_tsf.num_spatial + self.sprite_tsf.num_spatial
        if stages == 0 and self.sprite_size == size:
            return sprites, torch.ones_like(sprites[:, :, :1, :1])
        points = pixel_grid(size, size, sprites.device)[None, None, None]  # [1, 1, 1, P, 2]
        points, valid = self.layer_tsf.map_points(points, layer_params)
        if self.sprite_tsf.has_spatial:
            if self.layer_tsf.has_spatial:
                valid = valid & inside(points)
            points, more = self.sprite_tsf.map_points(points, sprite_params)
            valid = valid & more
        points = points.expand(b, num_layers, -1, -1, -1)
        if points.shape[2] == 1:  # one grid per layer: sample all M sprites as channels
            flat = sprites.reshape(b * num_layers, -1, *sprites.shape[-2:])
            out = sample(flat, points.flatten(0, 2), (size, size))
        else:
            out = sample(sprites.flatten(0, 2), points.flatten(0, 2), (size, size))
        out = out.view(b, num_layers, m, -1, size, size)
        shape = (b, num_layers, -1, 1, size, size)
        canvas = (valid & inside(points)).reshape(shape).to(out.dtype)
        if stages > 1:  # some intermediate point may have left its intermediate image
            out = out * valid.expand(b, num_layers, -1, -1).reshape(shape).to(out.dtype)
        return out, canvas

    def render_backgrounds(self, pred: Prediction) -> Tensor:
        """``[B, K', C, H, W]`` transformed background prototypes (border padding), or a black
        ``[B, 1, C, H, W]`` background when K' = 0."""
        b, size, c = pred.occlusion.shape[0], self.image_size, self.channels
        if not self.num_backgrounds:
            return pred.occlusion.new_zeros(b, 1, c, size, size)
        backgrounds = softclip(self.backgrounds).expand(b, -1, -1, -1, -1)
        backgrounds = softclip(self.background_tsf.color(backgrounds, pred.background))
        if self.background_tsf.has_spatial:
            points, _ = self.background_tsf.map_points(pixel_grid(size, size, backgrounds.device),
                                                       pred.background, padding="border")
            warped = sample(backgrounds.flatten(0, 1), points.flatten(0, 1), (size, size), "border")
            backgrounds = warped.view_as(backgrounds)
        return backgrounds

    @torch.no_grad()
    def reassign(self, target: int, source: int, noise: float) -> None:
        """Sprite ``target`` becomes a noisy copy of ``source``, with its sprite-specific heads
        in every layer (C.2, following DTI-Clustering)."""
        self.sprites.copy_sprite(target, source, noise)
        for head in self.sprite_tsf.heads:
            for layer in range(self.num_layers):
                head.copy_group(layer * self.num_sprites + target, layer * self.num_sprites + source)
