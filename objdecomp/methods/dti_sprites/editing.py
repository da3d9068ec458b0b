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

The input is resized to the model's square training size, so it should show one scene framed as
the training images were; a warning says when its size or aspect differs (a grid of several
scenes, say, would be squashed into one). Bad values (``--translate 0.1`` without ``dy``, a
colour of the wrong length, ``--scale 0``, a layer or sprite out of range) are usage errors.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, resize
from torchvision.utils import save_image

from datamodules.real_data import open_image
from objdecomp.compositing import composite
from objdecomp.methods.dti_sprites.module import DTISprites
from objdecomp.methods.dti_sprites.networks import Prediction
from objdecomp.nn.transforms import Transform


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


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load_image(path: str, model: DTISprites, warn: Callable[[str], None] = _warn) -> Tensor:
    """``[C, H, W]`` in [0, 1], resized to the model's image size (16-bit files scaled, not
    clipped); ``warn`` is told when the file's size or aspect differs from the training images'."""
    image = open_image(Path(path), "L" if model.channels == 1 else "RGB")
    message = size_warning(path, image.width, image.height, model.image_size)
    if message:
        warn(message)
    tensor = pil_to_tensor(image).float() / 255
    return resize(tensor, [model.image_size, model.image_size], antialias=True)


def size_warning(path: str, width: int, height: int, size: int) -> Optional[str]:
    """What resizing a ``width`` x ``height`` input to the model's square ``size`` does, if anything."""
    if (width, height) == (size, size):
        return None
    if width != height:
        return (f"{path} is {width}x{height} but the model was trained on {size}x{size} square images: "
                f"it is stretched to {size}x{size}, which distorts every object; crop one scene first")
    return (f"{path} is {width}x{height} but the model was trained on {size}x{size} images: it is "
            "resized, so it must show one scene framed as in training (a grid of several scenes "
            "would be squashed into one)")


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


def _position(model: DTISprites, pred: Prediction, layer: int, sprite: int) -> Tuple[Transform, Tensor]:
    """The active ``pos`` module and a view of its parameters for ``layer`` (and ``sprite``)."""
    kind, index = _find(model, "pos")
    sequence = model.net.layer_tsf if kind == "layer" else model.net.sprite_tsf
    return sequence.transforms[index], _params(pred, kind, index, layer, sprite)


def _params(pred: Prediction, kind: str, index: int, layer: int, sprite: int) -> Tensor:
    """A view of one layer's (and, for sprite-specific modules, one sprite's) parameters."""
    if kind == "layer":
        return pred.layer[index][:, layer - 1]
    return pred.sprite[index][:, layer - 1, sprite]


def check_edit(model: DTISprites, edit: Edit) -> None:
    """ValueError saying what is wrong with ``edit`` for this model, if anything."""
    layers, sprites = model.net.num_layers, model.net.num_sprites
    if not 1 <= edit.layer <= layers:
        raise ValueError(f"layer must be in 1..{layers}, got {edit.layer}")
    if edit.sprite is not None and not 0 <= edit.sprite <= sprites:
        raise ValueError(f"sprite must be in 0..{sprites} ({sprites} = empty), got {edit.sprite}")
    if edit.color is not None and len(edit.color) != model.channels:
        raise ValueError(f"color needs {model.channels} values (one per channel of this model), "
                         f"got {len(edit.color)}: {','.join(map(str, edit.color))}")
    if edit.translate is not None and len(edit.translate) != 2:
        raise ValueError(f"translate needs two values dx,dy, got {len(edit.translate)}")
    if edit.scale is not None and not 0 < edit.scale < math.inf:
        raise ValueError(f"scale must be a positive factor, got {edit.scale}")
    if edit.translate is not None or edit.scale is not None:
        _find(model, "pos")
    if edit.color is not None:
        _find(model, "col")


@torch.no_grad()
def apply_edit(model: DTISprites, pred: Prediction, ids: Tensor, edit: Edit, colors: Tensor,
               weights: Tensor) -> None:
    """Change ``pred`` and ``ids`` in place (``colors``/``weights`` of the unedited composite)."""
    check_edit(model, edit)
    if edit.sprite is not None:
        ids[:, edit.layer] = edit.sprite
    sprite = int(ids[0, edit.layer].clamp(max=model.net.num_sprites - 1))
    if edit.translate is not None or edit.scale is not None:
        _move(*_position(model, pred, edit.layer, sprite), edit)
    if edit.color is not None:
        _recolor(model, pred, edit, sprite, colors[:, edit.layer], weights[:, edit.layer])


def _move(position: Transform, theta: Tensor, edit: Edit) -> None:
    """Translate and rescale the sprite's frame on the canvas, whatever ``pos``'s parameterisation."""
    centre, size = position.placement(theta)
    if edit.scale is not None:
        size = size * edit.scale
    if edit.translate is not None:
        centre = centre + 2 * torch.tensor(edit.translate, dtype=theta.dtype)  # [-1, 1] spans the image
    placed = position.placed(centre, size)
    if not placed.isfinite().all():
        raise ValueError(f"this model's pos keeps a sprite's frame smaller than the image: scale "
                         f"x{edit.scale} would make it {float(size.max()):.2f} of the image")
    theta.copy_(placed)


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
                position, theta = _position(model, pred, layer, sprite)
                centre, size = position.placement(theta[0])
                x, y = (centre / 2 + 0.5).tolist()  # as fractions of the image
                text += f", centre ({x:.2f}, {y:.2f}), frame {float(size):.2f} of the image width"
            except ValueError:
                pass
        lines.append(text)
    return lines


def _floats(text: str, count: Optional[int] = None, form: str = "") -> Tuple[float, ...]:
    """Comma-separated finite numbers (``count`` of them when given), for argparse."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) for v in values) or count not in (None, len(values)):
        raise argparse.ArgumentTypeError(f"expected {form or 'comma-separated numbers'}, got {text!r}")
    return values


def _colour(text: str) -> Tuple[float, ...]:
    values = _floats(text, form="one number in [0, 1] per channel, e.g. 1,0.2,0.2")
    if not all(0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"colour values must be in [0, 1], got {text!r}")
    return values


def _shift(text: str) -> Tuple[float, float]:
    return _floats(text, 2, "dx,dy: two numbers, fractions of the image size, e.g. 0.1,0")


def _factor(text: str) -> float:
    value = _floats(text, 1, "one number, e.g. 1.5")[0]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size factor, e.g. 1.5, got {text!r}")
    return value


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
    parser.add_argument("--color", type=_colour, help="target mean colour in [0, 1], one value per "
                        "channel, e.g. 1,0.2,0.2")
    parser.add_argument("--translate", type=_shift, help="dx,dy as fractions of the image size, e.g. "
                        "0.1,0 (write --translate=-0.1,0 when dx is negative)")
    parser.add_argument("--scale", type=_factor, help="size factor > 0, e.g. 1.5")
    args = parser.parse_args(argv)
    if not args.list and not args.output:
        parser.error("--output is required unless --list is given")
    model = load_model(args.checkpoint)
    try:
        image = load_image(args.image, model)
    except (FileNotFoundError, ValueError) as error:  # unreadable: CorruptFileError names the file
        parser.error(str(error))
    if args.list:
        print("\n".join(describe(model, image)))
        return 0
    edit = Edit(args.layer, args.sprite, args.color, args.translate, args.scale)
    try:
        check_edit(model, edit)
    except ValueError as error:
        parser.error(str(error))
    reconstruction, edited = edit_image(model, image, [edit])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_image(edited, args.output)
    if args.strip:
        save_image(torch.stack([image, reconstruction.cpu(), edited.cpu()]), args.strip, nrow=3, padding=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
