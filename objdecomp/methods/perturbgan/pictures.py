"""Fig. 3-style pictures of generated layered scenes."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import make_grid

from objdecomp.compositing import over


@torch.no_grad()
def samples_figure(module, count: int = 8) -> Tensor:
    """Rows: background, foreground, mask, mask × foreground, composite, shifted composite
    (the EMA generator at the current resolution, fresh codes), ``[3, H, W]`` in [0, 1]."""
    phase = module.phase() if module._trainer is not None else module.growing.at(10 ** 12)
    layers = module.sample_layers(count, phase, ema=True)
    shifted, _ = module.composite(layers, phase)
    to01 = lambda t: ((t.float().clamp(-1, 1) + 1) / 2)  # noqa: E731
    mask = layers.mask.float().expand(-1, 3, -1, -1)
    rows = [to01(layers.background), to01(layers.foreground), mask,
            to01(layers.foreground) * mask,
            to01(over(layers.foreground, layers.mask, layers.background)), to01(shifted)]
    return make_grid(torch.cat(rows), nrow=count, padding=1, pad_value=1.0)
