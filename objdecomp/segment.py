"""``objdecomp segment``: any trained method's decomposition of your own images.

Every method returns the same decomposition (``DESIGN.md`` contract 2), so one command serves
them all. Each image is converted to the model's channels and resized to its square input size
(a plain resize, as a square crop would hide part of the picture); the soft masks are resized
back to the image's own size. Per image, in the output folder (sub-folders mirrored):

- ``<name>_labels.png``: the component owning each pixel, a palette PNG (index = component);
- ``<name>_overlay.png``: the image with the components' colours blended over it;
- ``<name>_masks.npz``: ``masks`` ``[K, H, W]`` float16 (summing to 1 over K), ``labels``
  ``[H, W]`` and ``background`` ``[K]`` (which components are background).

A file that cannot be read is reported by name and skipped; the others are still written.
``objdecomp predict`` writes the same files through
:class:`objdecomp.callbacks.predictions.DecompositionWriter`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torchvision.transforms import functional as TF

from datamodules.real_data import IMAGE_EXTENSIONS, CorruptFileError, open_image
from objdecomp.types import Decomposition
from objdecomp.visualize import colorize

OVERLAY_OPACITY = 0.5


# --- writing one decomposition --------------------------------------------------------------
def palette_bytes(num_components: int) -> List[int]:
    """The PIL palette (flat RGB bytes) giving component ``k`` the colour the grids draw it in."""
    colours = colorize(torch.arange(num_components).view(1, 1, -1))[0, :, 0].T
    return (colours * 255).round().byte().flatten().tolist()


def write_decomposition(image: Tensor, masks: Tensor, background: Tensor, folder: Path,
                        name: str) -> None:
    """Writes the label map, overlay and soft masks of one image ``[C, H, W]`` in [0, 1] with its
    ``masks`` ``[K, H, W]`` (same size) under ``folder/name_*``."""
    folder.mkdir(parents=True, exist_ok=True)
    masks = masks.float().cpu()
    labels = masks.max(dim=0).indices
    label_map = Image.fromarray(labels.numpy().astype(np.uint8), mode="P")
    label_map.putpalette(palette_bytes(len(masks)))
    label_map.save(folder / f"{name}_labels.png")
    rgb = image.float().cpu().clamp(0, 1).expand(3, -1, -1)
    overlay = (1 - OVERLAY_OPACITY) * rgb + OVERLAY_OPACITY * colorize(labels[None])[0]
    TF.to_pil_image(overlay).save(folder / f"{name}_overlay.png")
    np.savez_compressed(folder / f"{name}_masks.npz", masks=masks.numpy().astype(np.float16),
                        labels=labels.numpy().astype(np.uint8), background=background.cpu().numpy())


# --- the model -----------------------------------------------------------------------------
def load_model(checkpoint: Path, device: torch.device):
    """The trained model of an ``objdecomp fit`` checkpoint, whatever its method, in eval mode."""
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise SystemExit(f"error: no checkpoint at {checkpoint}")
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        raise SystemExit(f"error: cannot read checkpoint {checkpoint}: {error}")
    class_path = (saved.get("hyper_parameters") or {}).get("_class_path")
    if not class_path:
        raise SystemExit(f"error: {checkpoint} names no model class: pass a checkpoint written "
                         "by `objdecomp fit` (runs/<experiment>/.../checkpoints/*.ckpt)")
    module, _, name = class_path.rpartition(".")
    model_class = getattr(importlib.import_module(module), name)
    return model_class.load_from_checkpoint(checkpoint, map_location=device).eval()


# --- the images ----------------------------------------------------------------------------
def find_images(path: Path) -> Tuple[Path, List[Path]]:
    """``(root, images)``: a folder's images (recursively, sorted) or one image file."""
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise SystemExit(f"error: --input {path} does not exist")
    images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise SystemExit(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) under {path}")
    return path, images


def model_input(image: Image.Image, size: int) -> Tensor:
    """``[C, size, size]`` in [0, 1]: the whole picture resized to the model's input."""
    return TF.to_tensor(TF.resize(image, [size, size], antialias=True))


def batches(paths: Sequence[Path], size: int, channels: int, batch_size: int,
            skipped: List[str]) -> Iterator[Tuple[List[Path], List[Tensor], Tensor]]:
    """``(paths, originals, inputs)`` per batch of readable images; unreadable ones are added to
    ``skipped``, each a message naming the file."""
    mode = "L" if channels == 1 else "RGB"
    for start in range(0, len(paths), batch_size):
        kept, originals, inputs = [], [], []
        for path in paths[start:start + batch_size]:
            try:
                image = open_image(path, mode)
            except (CorruptFileError, OSError) as error:
                named = isinstance(error, CorruptFileError)  # its message names the file
                skipped.append(str(error) if named else f"{path}: {error}")
                continue
            kept.append(path)
            originals.append(TF.to_tensor(image))
            inputs.append(model_input(image, size))
        if kept:
            yield kept, originals, torch.stack(inputs)


def masks_at(decomposition: Decomposition, index: int, height: int, width: int) -> Tensor:
    """Soft masks of image ``index`` resized to ``height x width`` (bilinear: still sum to 1)."""
    masks = decomposition.masks[index : index + 1].float()
    return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def segment(model, paths: Sequence[Path], root: Path, output: Path, batch_size: int = 16,
            progress: bool = True) -> Tuple[int, List[str]]:
    """Writes every readable image's decomposition; returns ``(written, skipped)``."""
    from tqdm import tqdm  # Lightning's dependency; imported here so `--help` starts fast

    skipped: List[str] = []
    written = 0
    size, channels = int(model.image_size), int(model.channels)
    bar = tqdm(total=len(paths), unit="image", disable=not progress, file=sys.stderr)
    for kept, originals, inputs in batches(paths, size, channels, batch_size, skipped):
        decomposition = model.checked_decompose(inputs.to(model.device))
        for i, (path, original) in enumerate(zip(kept, originals)):
            name = path.relative_to(root).with_suffix("")
            masks = masks_at(decomposition, i, *original.shape[-2:])
            write_decomposition(original, masks, decomposition.background,
                                output / name.parent, name.name)
            written += 1
        bar.update(written + len(skipped) - bar.n)  # skipped files count as done
    bar.update(written + len(skipped) - bar.n)
    bar.close()
    return written, skipped


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``objdecomp segment``: label maps, overlays and soft masks of your images."""
    parser = argparse.ArgumentParser(prog="objdecomp segment", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint of `objdecomp fit`")
    parser.add_argument("--input", required=True, type=Path, help="an image, or a folder of images")
    parser.add_argument("--output", required=True, type=Path, help="folder for the outputs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1 ...")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    root, paths = find_images(args.input)
    model = load_model(args.checkpoint, device)
    written, skipped = segment(model, paths, root, args.output, args.batch_size, not args.no_progress)
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    print(f"{written} image(s) segmented into {args.output}"
          + (f"; {len(skipped)} unreadable file(s) skipped" if skipped else ""))
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
