"""LAVAE's figures (Dittadi & Winther 2019, Fig. 1-9), drawn from the model's own latents.

- ``inference`` (Fig. 1, 5): per test image, the input, the reconstruction, the inferred
  locations (white pixels on black) and the sprite of each object;
- ``prior_samples`` (Fig. 2, 4) with the learned p(n), ``prior_samples_4_5`` with p(n) uniform
  on {4, 5} (Fig. 9);
- ``object_swap`` (Fig. 3, 6): the reconstruction, then the same latents with the appearances
  of the first two objects exchanged;
- ``traversals`` (Fig. 3, 7): the first object moved along the row, then one of its
  appearance dimensions from −2 to 2.
"""

from __future__ import annotations

from typing import Dict, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

from objdecomp.types import Decomposition
from objdecomp.visualize import to_rgb

STEPS = 7  # pictures per traversal row


class LAVAEPictures:
    """Mixin of :class:`~objdecomp.methods.lavae.LAVAE`: ``pictures()`` and its figures."""

    def pictures(self, batch: Mapping[str, Tensor], decomposition: Decomposition
                 ) -> Dict[str, Tensor]:
        images = batch["image"][:8]
        mode = self.posterior_mode(images)
        rows = len(images)
        grid = lambda t, nrow: make_grid(to_rgb(t.clamp(0, 1)), nrow=nrow, padding=2,  # noqa: E731
                                         pad_value=0.5)
        figures = {"inference": grid(self._inference_rows(images, mode), 3 + self._shown(mode)),
                   "prior_samples": grid(self.sample(rows), rows),
                   "prior_samples_4_5": grid(self.sample(rows, torch.randint(4, 6, (rows,))), rows)}
        two = mode["n"] >= 2
        if two.any():
            figures["object_swap"] = grid(self._swapped(images[two][:4]), min(4, int(two.sum())))
        one = mode["n"] >= 1
        if one.any():
            figures["traversals"] = grid(self._traversals(images[one][:1]), STEPS)
        return figures

    @staticmethod
    def _shown(mode: Dict[str, Tensor]) -> int:
        return max(1, int(mode["n"].max()) if len(mode["n"]) else 1)

    def _inference_rows(self, images: Tensor, mode: Dict[str, Tensor]) -> Tensor:
        b, c, h, w = images.shape
        shown = self._shown(mode)
        present = mode["present"]
        recon = self.render(mode["z_app"], mode["locations"], present).clamp(0, 1)
        where = images.new_zeros(b, h * w)
        where.scatter_(1, mode["locations"], present.to(images.dtype))
        where = F.max_pool2d(where.view(b, 1, h, w), 3, 1, 1).expand(-1, c, -1, -1)
        sprites = images.new_zeros(b, shown, c, h, w)
        if present.any():
            decoded = self.sprite_decoder(mode["z_app"][present])
            s = decoded.shape[-1]
            top = (h - s) // 2
            canvas = images.new_zeros(len(decoded), c, h, w)
            canvas[:, :, top:top + s, top:top + s] = decoded
            padded = images.new_zeros(b, mode["locations"].shape[1], c, h, w)
            padded[present] = canvas
            sprites[:, :padded.shape[1]] = padded[:, :shown]
        return torch.cat([images[:, None], recon[:, None], where[:, None], sprites], 1).flatten(0, 1)

    def _swapped(self, images: Tensor) -> Tensor:
        mode = self.posterior_mode(images)
        z_app = mode["z_app"]
        swapped = z_app.clone()
        swapped[:, [0, 1]] = z_app[:, [1, 0]]
        original = self.render(z_app, mode["locations"], mode["present"])
        return torch.cat([original, self.render(swapped, mode["locations"], mode["present"])])

    def _traversals(self, images: Tensor) -> Tensor:
        mode = self.posterior_mode(images)
        w = self.image_size
        location = mode["locations"][:, 0]
        row, col = location // w, location % w
        cols = torch.linspace(0, w - 1, STEPS, device=images.device).long()
        moved = []
        for target in cols:
            locations = mode["locations"].clone()
            locations[:, 0] = row * w + target
            # A location already taken by another object stays where it was (Eq. 3).
            if (locations[:, 1:] == locations[:, :1]).any():
                locations[:, 0] = row * w + col
            moved.append(self.render(mode["z_app"], locations, mode["present"]))
        changed = []
        for value in torch.linspace(-2, 2, STEPS).tolist():
            z_app = mode["z_app"].clone()
            z_app[:, 0, 0] = value
            changed.append(self.render(z_app, mode["locations"], mode["present"]))
        return torch.cat(moved + changed)
