"""PerturbGAN's networks: the layered generator of §3.1/§4 and the encoder of §3.3/§4."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from objdecomp.nn.backbones import Encoder
from objdecomp.nn.stylegan import StyleGenerator, StyleSynthesis


class Layers(NamedTuple):
    """One layered scene, in the generator's range ([-1, 1] for colours): background ``[B, 3,
    H, W]``, foreground ``[B, 3, H, W]`` and mask ``[B, 1, H, W]`` in [0, 1]."""

    background: Tensor
    foreground: Tensor
    mask: Tensor


class LayeredGenerator(nn.Module):
    """G = (G_B, G_F, G_m) (§4).

    ``generators="two"`` (the paper's default): a background StyleGAN (3 outputs) and an object
    StyleGAN (foreground RGB + mask logit), each with its own mapping network, both fed the same
    z. ``generators="single"`` (Table 1 row h): one StyleGAN with 7 outputs. The mask is the
    sigmoid of the faded logits. ``generators="plain"``: Table 3's single-output (SO) GAN, one
    StyleGAN whose 3 outputs are the image itself (background = foreground = the image, mask 1).
    """

    def __init__(self, resolution: int, latent_dim: int = 512, mapping_depth: int = 8,
                 mapping_lr_scale: float = 0.01, channel_base: int = 16384, channel_max: int = 512,
                 generators: str = "two", channels: int = 3, first_output: int = 4):
        super().__init__()
        if generators not in ("two", "single", "plain"):
            raise ValueError(f"generators must be 'two', 'single' or 'plain', got {generators!r}")
        args = dict(resolution=resolution, latent_dim=latent_dim, mapping_depth=mapping_depth,
                    mapping_lr_scale=mapping_lr_scale, channel_base=channel_base,
                    channel_max=channel_max, first_output=first_output)
        self.channels, self.latent_dim, self.plain = channels, latent_dim, generators == "plain"
        if self.plain:
            self.nets = nn.ModuleList([StyleGenerator(out_channels=channels, **args)])
        elif generators == "two":
            self.nets = nn.ModuleList([StyleGenerator(out_channels=channels, **args),
                                       StyleGenerator(out_channels=channels + 1, **args)])
        else:
            self.nets = nn.ModuleList([StyleGenerator(out_channels=2 * channels + 1, **args)])

    @property
    def num_styles(self) -> int:
        """Style inputs of all generators: 2 per resolution per generator (§4's "5 · 2 · 2")."""
        return sum(net.synthesis.num_styles for net in self.nets)

    def mean_styles(self) -> Tensor:
        """The generators' mean w for every style input ``[num_styles, D]``."""
        return torch.cat([net.mapping.w_avg[None].expand(net.synthesis.num_styles, -1)
                          for net in self.nets])

    def styles(self, z: Tensor, z_mix: Optional[Tensor] = None, mixing: float = 0.0,
               resolution: Optional[int] = None) -> Tensor:
        """Per-layer styles of every generator ``[B, num_styles, D]``; each generator mixes
        with its own crossover point (the same z for both, §4)."""
        return torch.cat([net.styles(z, z_mix, mixing, resolution) for net in self.nets], dim=1)

    def synthesise(self, styles: Tensor, resolution: Optional[int] = None,
                   alpha: float = 1.0) -> Layers:
        """The layers from per-layer styles (what the encoder of §3.3 feeds)."""
        outputs, start = [], 0
        for net in self.nets:
            synthesis: StyleSynthesis = net.synthesis
            outputs.append(synthesis(styles[:, start:start + synthesis.num_styles], resolution, alpha))
            start += synthesis.num_styles
        out = torch.cat(outputs, dim=1)
        c = self.channels
        if self.plain:
            return Layers(background=out, foreground=out, mask=torch.ones_like(out[:, :1]))
        return Layers(background=out[:, :c], foreground=out[:, c:2 * c],
                      mask=torch.sigmoid(out[:, 2 * c:2 * c + 1]))

    def forward(self, z: Tensor, z_mix: Optional[Tensor] = None, mixing: float = 0.0,
                resolution: Optional[int] = None, alpha: float = 1.0) -> Layers:
        return self.synthesise(self.styles(z, z_mix, mixing, resolution), resolution, alpha)


class StyleEncoder(nn.Module):
    """E (§4): a randomly initialised ResNet trunk at ``input_size`` without final average
    pooling (its whole feature map, flattened), then one linear layer to every style input of
    the generators (``num_styles × latent_dim``; 20 × 512 for the paper's 64×64 generator).

    Our choice: the linear layer predicts offsets from the generators' mean w, starting near
    zero, so training starts from the mean scene rather than from arbitrary styles.
    """

    def __init__(self, num_styles: int, latent_dim: int, backbone: str = "resnet18",
                 input_size: int = 64, channels: int = 3, width: int = 16):
        super().__init__()
        self.input_size, self.num_styles, self.latent_dim = input_size, num_styles, latent_dim
        self.trunk = Encoder(backbone, channels, pool=1, width=width)
        with torch.no_grad():
            side = self.trunk.trunk.eval()(torch.zeros(1, channels, input_size, input_size)).shape[-1]
        self.trunk.train()
        self.trunk.pool = nn.Identity()  # no final average pooling (§4): the whole feature map
        self.trunk.out_features = self.trunk.trunk.out_channels * side * side
        self.linear = nn.Linear(self.trunk.out_features, num_styles * latent_dim)
        with torch.no_grad():
            self.linear.weight.mul_(0.1)
            self.linear.bias.zero_()

    def forward(self, images: Tensor, mean_styles: Tensor) -> Tensor:
        """``images`` ``[B, C, S, S]`` in [-1, 1] -> styles ``[B, num_styles, D]``."""
        if images.shape[-1] != self.input_size:
            images = nn.functional.interpolate(images, size=self.input_size, mode="bilinear",
                                               antialias=True, align_corners=False)
        offsets = self.linear(self.trunk(images)).view(-1, self.num_styles, self.latent_dim)
        return mean_styles[None].to(offsets.dtype) + offsets
