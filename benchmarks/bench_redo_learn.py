"""Learning check of ReDO on CPU: train an experiment for a wall-clock budget and watch the masks form.

    python benchmarks/bench_redo_learn.py --exp quick/redo_textured_shape --minutes 45

Builds the datamodule, model and trainer callbacks (e.g. the collapse restart) from
``experiments/_base/default.yaml`` + ``experiments/<exp>.yaml``, with the dataset facts
linked into the model as the CLI does, and trains on ``--threads`` CPU threads. Every
``--eval-every`` seconds of training (evaluation is not charged to the budget) it scores the
validation split with the suite's metrics: ReDO's best-permutation foreground accuracy and
IoU on single-object sets, matched mIoU and ARI-FG on multi-object ones (colored-2-MNIST),
beside the same scores of the trivial full-image mask. It prints the curve, writes it to
``<out>/curve.json`` and saves the Fig. 2 grid and the decomposition grid of each evaluation
as ``<out>/grid_<minutes>.png``. ``--set model.gen_width=32`` overrides a config value.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List

from learning import (WallClockBudget, add_arguments, build, format_row, instantiate, load_config,
                      output_folder)

SHOWN_SINGLE = ("fg_best_iou", "fg_best_acc")  # ReDO's Table 1 scores (one object)
SHOWN_MULTI = ("matched_miou", "ari_fg")  # colored-2-MNIST: background and two digits


def evaluate(model, loader, facts: Dict[str, int]) -> Dict[str, float]:
    """Validation scores of the model and of the full-image mask (``full_*``)."""
    import torch

    from objdecomp.metrics import build_metrics
    from objdecomp.types import Decomposition

    keys = ("num_classes", "num_background", "max_objects")
    ours, full = (build_metrics(**{k: facts[k] for k in keys}) for _ in range(2))
    model.eval()
    with torch.no_grad():
        for batch in loader:
            decomposition = model.decompose(batch["image"])
            masks = torch.zeros_like(decomposition.masks)
            masks[:, 0] = 1  # one component owns every pixel
            trivial = Decomposition(recon=batch["image"], masks=masks,
                                    background=decomposition.background)
            for metrics, result in ((ours, decomposition), (full, trivial)):
                for metric in metrics.values():
                    if metric.applies_to(batch, result):
                        metric.update(batch, result)
    model.train()
    shown = SHOWN_SINGLE if facts["max_objects"] == 1 else SHOWN_MULTI
    values: Dict[str, float] = {}
    for prefix, metrics in (("", ours), ("full_", full)):
        for name, metric in metrics.items():
            if metric.update_called:
                for key, value in metric.compute().items():
                    label = f"{name}_{key}" if key else name
                    if label in shown:
                        values[prefix + label] = float(value)
    return values


class ScoreCurve(WallClockBudget):
    """The training budget, scoring the validation split and drawing grids at each record."""

    def __init__(self, budget_s: float, eval_every_s: float, loader, facts: Dict[str, int],
                 out: Path, curve: List[Dict[str, float]]):
        super().__init__(budget_s, eval_every_s, record_first=True)
        self.loader, self.facts, self.out, self.curve = loader, facts, out, curve

    def record(self, trainer, pl_module, outputs):
        row = {"minutes": round(self.minutes, 2), "iterations": pl_module.batch_step + 1,
               **{k: float(v) for k, v in trainer.callback_metrics.items()
                  if k in ("train/g_adv", "train/z_rec", "train/d", "train/ce")},
               **evaluate(pl_module, self.loader, self.facts)}
        self.curve.append(row)
        print(format_row(row), flush=True)
        draw(pl_module, self.loader, self.out / f"grid_{row['minutes']:06.2f}min.png")


def draw(model, loader, path: Path) -> None:
    """Fig. 2 grid (ReDO; not the supervised F) and the decomposition grid of the first
    validation images."""
    import torch
    from torchvision.utils import save_image

    from objdecomp.methods.redo.pictures import redrawing_figure
    from objdecomp.visualize import decomposition_rows, save_rows

    batch = {k: v[:5] for k, v in next(iter(loader)).items()}
    model.eval()
    with torch.no_grad():
        if hasattr(model, "nets"):  # the generators that redraw regions
            save_image(redrawing_figure(model.nets, batch, model.num_background), path)
        rows = decomposition_rows(batch["image"], model.decompose(batch["image"]), batch)
        save_rows(rows, path.with_name(path.stem + "_decomposition.png"))
    model.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # One thread by default: with two, every small op waits for both cores, and a single
    # busy core elsewhere slowed this 32x32 model 15-fold on the shared 2-core machine.
    add_arguments(parser, exp="quick/redo_textured_shape", minutes=45.0, eval_every=180.0, threads=1)
    args = parser.parse_args()

    import pytorch_lightning as pl
    import torch

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed)
    config = load_config(args.exp, args.set)
    model, datamodule = build(config)
    datamodule.setup("fit")
    out = output_folder(args)
    curve: List[Dict[str, float]] = []
    monitor = ScoreCurve(args.minutes * 60, args.eval_every, datamodule.val_dataloader(),
                         datamodule.facts, out, curve)
    callbacks = [instantiate(spec) for spec in config.get("trainer", {}).get("callbacks", [])]
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=-1, max_epochs=-1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         use_distributed_sampler=False, callbacks=[monitor, *callbacks])
    started = time.time()
    trainer.fit(model, datamodule)
    best = max(curve, key=lambda row: row.get("fg_best_iou", row.get("matched_miou", 0.0)))
    summary = {"exp": args.exp, "overrides": args.set, "threads": args.threads,
               "wall_minutes": round((time.time() - started) / 60, 1), "final": curve[-1],
               "best": best, "curve": curve}
    (out / "curve.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("final:", json.dumps(curve[-1]), "\nbest:", json.dumps(best))


if __name__ == "__main__":
    main()
