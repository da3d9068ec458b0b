"""Table 2's baselines, computed by the suite: the full-image mask and GrabCut (Rother et al.
2004) initialised with a centred rectangle. Both are decompositions without training, scored
by the same metrics as every method::

    python -m objdecomp.methods.perturbgan.baselines --exp perturbgan_cub_encoder --baseline grabcut
    python -m objdecomp.methods.perturbgan.baselines --exp quick/perturbgan_textured_shape --baseline full

The results file is ``$OBJDECOMP_RESULTS/<experiment>_<baseline>/…json`` (e.g.
``perturbgan_cub_encoder_grabcut``), which Table 2's baseline rows read.

The experiment supplies only the datamodule (its data section, read by the CLI as ``objdecomp
test`` reads it); the evaluation is Lightning's test loop over the split, as ``objdecomp test``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import ClassVar, List, Optional

import numpy as np
import torch
from torch import Tensor

from objdecomp.methods.base import DecompositionModule
from objdecomp.types import Decomposition


def _two_layer(images: Tensor, mask: Tensor) -> Decomposition:
    """Background/object decomposition of ``images`` with object mask ``[B, 1, H, W]``."""
    mask = mask.to(images.dtype)
    return Decomposition(recon=images, masks=torch.cat([1 - mask, mask], dim=1),
                         background=torch.tensor([True, False], device=images.device),
                         layers=torch.stack([images, images], dim=1))


class _Untrained(DecompositionModule):
    """A decomposition with nothing to learn (evaluated with ``trainer.test`` only). Its results
    file names the baseline instead of a checkpoint, so that ``objdecomp tables`` counts it."""

    baseline_name: ClassVar[str]

    def __init__(self, image_size: int = 128, channels: int = 3, max_objects: int = 1,
                 num_classes: int = 0, num_background: int = 1, init_checkpoint: Optional[str] = None):
        super().__init__(image_size, channels, max_objects, num_classes, num_background,
                         init_checkpoint)

    def training_step(self, batch, batch_idx):
        raise RuntimeError(f"{type(self).__name__} has nothing to train; evaluate it with test")

    def configure_optimizers(self):
        return None


class FullImageMask(_Untrained):
    """Table 2's last row: the whole image is the object."""

    baseline_name = "full"

    def decompose(self, images: Tensor) -> Decomposition:
        return _two_layer(images, torch.ones_like(images[:, :1]))


class GrabCut(_Untrained):
    """OpenCV's GrabCut per image, initialised with a centred rectangle leaving ``margin`` of
    each side as sure background, ``iterations`` rounds; the object is GrabCut's (probable)
    foreground.
    """

    baseline_name = "grabcut"

    def __init__(self, margin: float = 0.1, iterations: int = 5, **facts):
        super().__init__(**facts)
        self.margin, self.iterations = margin, iterations

    def decompose(self, images: Tensor) -> Decomposition:
        import cv2  # opencv-python-headless, needed by this baseline only

        masks = []
        for image in images:
            rgb = (image.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
            if rgb.shape[2] == 1:
                rgb = np.repeat(rgb, 3, axis=2)
            h, w = rgb.shape[:2]
            x0, y0 = int(round(self.margin * w)), int(round(self.margin * h))
            rect = (x0, y0, max(1, w - 2 * x0), max(1, h - 2 * y0))
            mask = np.zeros((h, w), np.uint8)
            background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            try:
                cv2.grabCut(np.ascontiguousarray(rgb[..., ::-1]), mask, rect, background, foreground,
                            self.iterations, cv2.GC_INIT_WITH_RECT)
                obj = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
            except cv2.error:  # e.g. a flat image: no colour model can be fitted
                obj = np.zeros((h, w), bool)
                obj[y0:h - y0, x0:w - x0] = True
            masks.append(torch.from_numpy(obj))
        return _two_layer(images, torch.stack(masks)[:, None].to(images.device))


BASELINES = {b.baseline_name: b for b in (FullImageMask, GrabCut)}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", required=True, help="experiment whose datamodule is evaluated")
    parser.add_argument("--baseline", choices=sorted(BASELINES), required=True)
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--data", action="append", default=[],
                        help="datamodule override, e.g. root=/data/cub (repeatable)")
    args = parser.parse_args(argv)

    from objdecomp.cli import ObjdecompCLI, config_arguments

    # Results under <experiment>_<baseline>, the name experiments/paper_tables.yaml reads.
    cli = ObjdecompCLI(args=[*config_arguments(args.exp), f"--eval_split={args.split}",
                             f"--experiment={Path(args.exp).name}_{args.baseline}",
                             "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                             *(f"--data.init_args.{item}" for item in args.data)], run=False)
    data = cli.datamodule
    facts = dict(image_size=data.image_size, channels=data.channels, max_objects=data.max_objects,
                 num_classes=data.num_classes, num_background=data.num_background)
    baseline = BASELINES[args.baseline](**facts)
    cli.trainer.test(baseline, datamodule=data, verbose=False)
    metrics = {k: float(v) for k, v in sorted(cli.trainer.callback_metrics.items())}
    print(f"{args.baseline} on {args.exp} ({args.split}): "
          + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
