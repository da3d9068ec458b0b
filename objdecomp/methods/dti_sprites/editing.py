"""Object-centric image editing with a trained DTI-Sprites model (Sec. 4.1, Fig. 4).

The model explains an image as sprites with explicit transformation parameters, so editing an
object is editing its layer: swap its sprite, change its colour, move it or rescale it, then
composite again. API: :func:`edit_image` with :class:`Edit` values; command line (wired as
``objdecomp edit``)::

    objdecomp edit --checkpoint last.ckpt --image in.png --output out.png --layer 2 --sprite 4
    objdecomp edit --checkpoint last.ckpt --image in.png --list          # what each layer holds

Layers are numbered 1..L from back to front (0 is the background). Position and scale edits
need a ``pos`` module (layer transformations of the multi-object models); colour edits a ``col``
module. A colour edit rescales the layer's colour transformation so that the object's mean
colour becomes the target, keeping its shading.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, resize
from torchvision.utils import save_image

from objdecomp.compositing import composite
from objdecomp.methods.dti_sprites.module import DTISprites
from objdecomp.methods.dti_sprites.networks import Prediction


@dataclass
class Edit:
    """One change to one object layer (1..L). Unset fields are left as inferred."""

    layer: int
    sprite: Optional[int] = None  # new sprite id (0..K−1), or K for the empty sprite
    color: Optional[Tuple[float, ...]] = None  # target mean colour in [0, 1], one per channel
    translate: Optional[Tuple[float, float]] = None  # (dx, dy) as fractions of the image size
    scale: Optional[float] = None  # multiplies the object's size


def load_model(checkpoint: str, device: str = "cpu") -> DTISprites:
    """A trained model in evaluation mode."""
    model = DTISprites.load_from_checkpoint(checkpoint, map_location=device)
    return model.eval()


def load_image(path: str, model: DTISprites) -> Tensor:
    """``[C, H, W]`` in [0, 1], resized to the model's image size."""
    image = Image.open(path).convert("L" if model.channels == 1 else "RGB")
    tensor = pil_to_tensor(image).float() / 255
    return resize(tensor, [model.image_size, model.image_size], antialias=True)


def _module_index(names: Sequence[str], count: int, wanted: str) -> Optional[int]:
    active = list(names[:count])
    return active.index(wanted) if wanted in active else None


def _find(model: DTISprites, wanted: str) -> Tuple[str, int]:
    """Where the ``wanted`` module lives: ``("layer" | "sprite", index in the param list)``."""
    for kind, sequence in (("layer", model.net.layer_tsf), ("sprite", model.net.sprite_tsf)):
        index = _module_index(sequence.names, int(sequence.num_active), wanted)
        if index is not None:
            return kind, index
    raise ValueError(f"this model has no active '{wanted}' transformation to edit")


def _params(pred: Prediction, kind: str, index: int, layer: int, sprite: int) -> Tensor:
    """A view of one layer's (and, for sprite-specific modules, one sprite's) parameters."""
    if kind == "layer":
        return pred.layer[index][:, layer - 1]
    return pred.sprite[index][:, layer - 1, sprite]


@torch.no_grad()
def apply_edit(model: DTISprites, pred: Prediction, ids: Tensor, edit: Edit, colors: Tensor,
               weights: Tensor) -> None:
    """Change ``pred`` and ``ids`` in place (``colors``/``weights`` of the unedited composite)."""
    if not 1 <= edit.layer <= model.net.num_layers:
        raise ValueError(f"layer must be in 1..{model.net.num_layers}, got {edit.layer}")
    if edit.sprite is not None:
        if not 0 <= edit.sprite <= model.net.num_sprites:
            raise ValueError(f"sprite must be in 0..{model.net.num_sprites} ({model.net.num_sprites} = empty)")
        ids[:, edit.layer] = edit.sprite
    sprite = int(ids[0, edit.layer].clamp(max=model.net.num_sprites - 1))
    if edit.translate is not None or edit.scale is not None:
        theta = _params(pred, *_find(model, "pos"), edit.layer, sprite)
        if edit.scale is not None:
            theta[:, 0] += math.log(edit.scale)
        if edit.translate is not None:
            theta[:, 1:] += 2 * torch.tensor(edit.translate, dtype=theta.dtype)  # [-1, 1] spans the image
    if edit.color is not None:
        _recolor(model, pred, edit, sprite, colors[:, edit.layer], weights[:, edit.layer])


def _recolor(model: DTISprites, pred: Prediction, edit: Edit, sprite: int, color: Tensor,
             weight: Tensor) -> None:
    theta = _params(pred, *_find(model, "col"), edit.layer, sprite)
    channels = model.channels
    target = torch.tensor(edit.color, dtype=theta.dtype).view(1, -1).expand(len(theta), channels)
    mean = (color * weight).flatten(2).sum(2) / weight.flatten(2).sum(2).clamp_min(1e-6)
    # y = (1 + w) x + b; scaling y by target/mean gives the target mean colour.
    ratio = torch.where(mean > 1e-2, target / mean.clamp_min(1e-2), torch.zeros_like(target))
    theta[:, :channels] = ratio * (1 + theta[:, :channels]) - 1
    theta[:, channels:] = torch.where(mean > 1e-2, ratio * theta[:, channels:], target)


@torch.no_grad()
def render(model: DTISprites, pred: Prediction, ids: Tensor, occlusion: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Composite ``(image, colors, weights)`` of the layers ``ids`` with parameters ``pred``."""
    colors, alphas = model.layers(pred, ids)
    image, weights = composite(colors, alphas, occlusion)
    return image.clamp(0, 1), colors, weights


@torch.no_grad()
def edit_image(model: DTISprites, image: Tensor, edits: Sequence[Edit]) -> Tuple[Tensor, Tensor]:
    """Reconstruction and edited image, both ``[C, H, W]``, of ``image`` ``[C, H, W]``."""
    pred, occlusion, ids = model.infer(image[None].to(model.device))
    reconstruction, colors, weights = render(model, pred, ids, occlusion)
    for edit in edits:
        apply_edit(model, pred, ids, edit, colors, weights)
    edited, _, _ = render(model, pred, ids, occlusion)
    return reconstruction[0], edited[0]


def describe(model: DTISprites, image: Tensor) -> List[str]:
    """One line per object layer: its sprite and, when there is a ``pos`` module, where it is."""
    with torch.no_grad():
        pred, _, ids = model.infer(image[None].to(model.device))
    lines = []
    for layer in range(1, model.net.num_layers + 1):
        sprite = int(ids[0, layer])
        text = f"layer {layer}: " + ("empty" if sprite == model.net.num_sprites else f"sprite {sprite}")
        if sprite < model.net.num_sprites:
            try:
                theta = _params(pred, *_find(model, "pos"), layer, sprite)[0]
                centre = (theta[1:] / 2 + 0.5).tolist()  # as fractions of the image
                text += f", centre ({centre[0]:.2f}, {centre[1]:.2f}), scale x{math.exp(theta[0]):.2f}"
            except ValueError:
                pass
        lines.append(text)
    return lines


def _floats(text: str) -> Tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``objdecomp edit``: edit one object of an image with a trained DTI-Sprites checkpoint."""
    parser = argparse.ArgumentParser(prog="objdecomp edit", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a DTI-Sprites checkpoint (.ckpt)")
    parser.add_argument("--image", required=True, help="input image (resized to the model's size)")
    parser.add_argument("--output", help="where to write the edited image (PNG)")
    parser.add_argument("--strip", help="optional PNG of input | reconstruction | edited")
    parser.add_argument("--list", action="store_true", help="print what each layer holds and exit")
    parser.add_argument("--layer", type=int, default=1, help="object layer to edit (1..L, back to front)")
    parser.add_argument("--sprite", type=int, help="swap in this sprite (K = the empty sprite)")
    parser.add_argument("--color", type=_floats, help="target mean colour, e.g. 1,0.2,0.2")
    parser.add_argument("--translate", type=_floats, help="dx,dy as fractions of the image size")
    parser.add_argument("--scale", type=float, help="size factor, e.g. 1.5")
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    image = load_image(args.image, model)
    if args.list:
        print("\n".join(describe(model, image)))
        return 0
    if not args.output:
        parser.error("--output is required unless --list is given")
    edit = Edit(args.layer, args.sprite, args.color, args.translate, args.scale)
    reconstruction, edited = edit_image(model, image, [edit])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_image(edited, args.output)
    if args.strip:
        save_image(torch.stack([image, reconstruction.cpu(), edited.cpu()]), args.strip, nrow=3, padding=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
