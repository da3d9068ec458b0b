"""DTI-Sprites' networks (Sec. 3.1, 3.3): sprites, backgrounds, transformers, occlusion head.

One encoder reads the image once; MLP heads predict, per image, the layer transformations
T^lay (one parameter set per layer), the sprite transformations T^spr (one per layer and
sprite, Eq. 3), the background transformations T^bkg (one per prototype) and the occlusion
matrix. :meth:`DTISpritesNet.render` turns sprites into layers: the colour modules act at
sprite resolution (they are pointwise, so they commute with the warp) and the spatial modules
of a sequence are fused into one sampling grid (see :meth:`DTISpritesNet._warp`).
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
    def copy_sprite(self, target: int, source: int, noise: float,
                    generator: Optional[torch.Generator] = None) -> None:
        shape = self.appearance[source].shape
        jitter = torch.randn(shape, generator=generator).to(self.appearance)  # same on every rank
        self.appearance[target] = self.appearance[source] + noise * jitter
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
        position: parameterisation of ``pos`` (:mod:`objdecomp.nn.transforms`).
    """

    def __init__(self, channels: int, image_size: int, num_sprites: int, num_layers: int,
                 num_backgrounds: int, sprite_size: int, mask_std: float, layer_transforms: str,
                 sprite_transforms: str, background_transforms: str, learn_occlusion: bool,
                 encoder: str, encoder_pool: int, encoder_width: int = 16, hidden: int = 128,
                 position: str = "half_canvas"):
        super().__init__()
        self.channels, self.image_size, self.sprite_size = channels, image_size, sprite_size
        self.num_sprites, self.num_layers, self.num_backgrounds = num_sprites, num_layers, num_backgrounds
        self.encoder = Encoder(encoder, channels, encoder_pool, encoder_width)
        features, ratio = self.encoder.out_features, (sprite_size / image_size,) * 2
        self.layer_tsf = TransformSequence(layer_transforms, features, num_layers, channels,
                                           ratio, hidden, position)
        # The sprite-level modules place the sprite's frame on the canvas when the layer has no
        # spatial module (Table 2's "w/o shared transfo."), so they start like the layer's would.
        frame_placed_by_layer = any(t.spatial for t in self.layer_tsf.transforms)
        self.sprite_tsf = TransformSequence(sprite_transforms, features, num_layers * num_sprites,
                                            channels, (1.0, 1.0) if frame_placed_by_layer else ratio,
                                            hidden, position)
        self.background_tsf = TransformSequence(background_transforms if num_backgrounds else "",
                                                features, max(num_backgrounds, 1), channels,
                                                hidden=hidden, position=position)
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
        features = self.encoder(images)  # under bf16 autocast when training in bf16-mixed
        with torch.autocast(images.device.type, enabled=False):
            return self._heads(features.float())

    def _heads(self, features: Tensor) -> Prediction:
        b, num_layers = features.shape[0], self.num_layers
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
        layers, canvas = self._warp(sprites, layer_params, sprite_params, noise is not None)
        colours, alphas = layers[:, :, :, :c], layers[:, :, :, c:]
        if noise is not None:
            noise = noise if ids is None else torch.cat([noise, torch.zeros_like(noise[:1])])[ids][:, :, None]
            alphas = torch.addcmul(alphas, noise, canvas)
        alphas = softclip(alphas)
        if ids is not None:
            alphas = alphas * (ids != k)[:, :, None, None, None, None]
        return colours, alphas

    def _warp(self, sprites: Tensor, layer_params: List[Tensor], sprite_params: List[Tensor],
              with_canvas: bool) -> Tuple[Tensor, Tensor]:
        """Resample ``[B, L, M, C+1, h, w]`` sprites onto the canvas.

        Sprite-level spatial modules act in the sprite's frame, layer-level ones place the frame
        on the canvas (Eq. 3). When both exist, the warp takes two resamplings as in the authors'
        code: the sprite-level one at sprite resolution (per-sprite grids of h·w points only),
        then the layer's, one grid for all sprites of a layer. Otherwise all spatial modules are
        fused into one grid and the sprite is resampled once.

        Returns the layers ``[B, L, M, C+1, H, W]`` and the canvas ``[B, L, M or 1, 1, H, W]``,
        where the sprite frame lands (the mask noise of C.3 goes there only).
        """
        size = (self.image_size, self.image_size)
        if self.layer_tsf.has_spatial and self.sprite_tsf.has_spatial:
            frame = sprites.shape[-2:]
            sprites, canvas = self._resample(sprites, self.sprite_tsf, sprite_params, frame)
            if with_canvas:  # warped along, as the authors warp a channel of ones
                sprites = torch.cat([sprites, canvas.expand_as(sprites[:, :, :, :1])], 3)
            out, canvas = self._resample(sprites, self.layer_tsf, layer_params, size)
            return (out[:, :, :, :-1], out[:, :, :, -1:]) if with_canvas else (out, canvas)
        if self.sprite_tsf.has_spatial:
            return self._resample(sprites, self.sprite_tsf, sprite_params, size)
        if self.layer_tsf.has_spatial or self.sprite_size != self.image_size:
            return self._resample(sprites, self.layer_tsf, layer_params, size)
        return sprites, torch.ones_like(sprites[:, :, :1, :1])

    @staticmethod
    def _resample(sprites: Tensor, sequence, params: List[Tensor], size: Tuple[int, int]
                  ) -> Tuple[Tensor, Tensor]:
        """One resampling through the fused spatial modules of ``sequence``; see :meth:`_warp`."""
        (b, num_layers, m), shape = sprites.shape[:3], (*sprites.shape[:2], -1, 1, *size)
        points = pixel_grid(*size, device=sprites.device)[None, None, None]  # [1, 1, 1, P, 2]
        points, valid = sequence.map_points(points, params)
        points = points.expand(b, num_layers, -1, -1, -1)
        if points.shape[2] == 1:  # one grid per layer: sample all M sprites as channels
            out = sample(sprites.reshape(b * num_layers, -1, *sprites.shape[-2:]), points.flatten(0, 2), size)
        else:
            out = sample(sprites.flatten(0, 2), points.flatten(0, 2), size)
        out = out.view(b, num_layers, m, -1, *size)
        canvas = (valid & inside(points)).reshape(shape).to(out.dtype)
        if sequence.num_spatial > 1:  # some intermediate point may have left its intermediate image
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
    def reassign(self, target: int, source: int, noise: float,
                 generator: Optional[torch.Generator] = None) -> None:
        """Sprite ``target`` becomes a noisy copy of ``source``, with its sprite-specific heads
        in every layer (C.2, following DTI-Clustering)."""
        self.sprites.copy_sprite(target, source, noise, generator)
        for head in self.sprite_tsf.heads:
            for layer in range(self.num_layers):
                head.copy_group(layer * self.num_sprites + target, layer * self.num_sprites + source)
