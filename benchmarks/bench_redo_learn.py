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
import importlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHOWN_SINGLE = ("fg_best_iou", "fg_best_acc")  # ReDO's Table 1 scores (one object)
SHOWN_MULTI = ("matched_miou", "ari_fg")  # colored-2-MNIST: background and two digits


def load_config(exp: str, overrides: List[str]) -> Dict[str, Any]:
    """Base + experiment YAML (the experiment wins), then ``section.key=value`` overrides."""
    config: Dict[str, Any] = {}
    for path in (ROOT / "experiments/_base/default.yaml", ROOT / f"experiments/{exp}.yaml"):
        _merge(config, yaml.safe_load(path.read_text()) or {})
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        target = config.setdefault(section, {})
        target = target.setdefault("init_args", {}) if section in ("model", "data") else target
        parsed = yaml.safe_load(value)
        target[name] = _number(parsed) if isinstance(parsed, str) else parsed
    return config


def _number(text: str):
    """``1e-5`` is a string to YAML 1.1 (it wants ``1.0e-5``); read it as the number meant."""
    try:
        return float(text)
    except ValueError:
        return text


def _merge(base: Dict[str, Any], update: Dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def instantiate(spec: Dict[str, Any], **extra: Any):
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**{**spec.get("init_args", {}), **extra})


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


def make_monitor(budget_s: float, eval_every_s: float, loader, facts, out: Path,
                 curve: List[Dict[str, float]]):
    import pytorch_lightning as pl

    class BudgetAndCurve(pl.Callback):
        """Stops after ``budget_s`` s of training; scores and draws every ``eval_every_s`` s."""

        def __init__(self):
            self.train_time, self.since_eval, self.started = 0.0, 0.0, 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            spent = time.perf_counter() - self.started
            self.train_time, self.since_eval = self.train_time + spent, self.since_eval + spent
            done = self.train_time >= budget_s
            if self.since_eval >= eval_every_s or done or pl_module.batch_step == 0:
                self.since_eval = 0.0
                self.record(trainer, pl_module)
            trainer.should_stop = trainer.should_stop or done

        def record(self, trainer, pl_module):
            row = {"minutes": round(self.train_time / 60, 2), "iterations": pl_module.batch_step + 1,
                   **{k: float(v) for k, v in trainer.callback_metrics.items()
                      if k in ("train/g_adv", "train/z_rec", "train/d")},
                   **evaluate(pl_module, loader, facts)}
            curve.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items()), flush=True)
            draw(pl_module, loader, out / f"grid_{row['minutes']:06.2f}min.png")

    return BudgetAndCurve()


def draw(model, loader, path: Path) -> None:
    """Fig. 2 grid and the suite's decomposition grid of the first validation images."""
    import torch
    from torchvision.utils import save_image

    from objdecomp.methods.redo.pictures import redrawing_figure
    from objdecomp.visualize import decomposition_rows, save_rows

    batch = {k: v[:5] for k, v in next(iter(loader)).items()}
    model.eval()
    with torch.no_grad():
        save_image(redrawing_figure(model.nets, batch, model.num_background), path)
        rows = decomposition_rows(batch["image"], model.decompose(batch["image"]), batch)
        save_rows(rows, path.with_name(path.stem + "_decomposition.png"))
    model.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", default="quick/redo_textured_shape")
    parser.add_argument("--minutes", type=float, default=45.0, help="training wall-clock budget")
    parser.add_argument("--eval-every", type=float, default=180.0,
                        help="seconds of training between evaluations")
    # One thread by default: with two, every small op waits for both cores, and a single
    # busy core elsewhere slowed this 32x32 model 15-fold on the shared 2-core machine.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="picture folder (default: $OBJDECOMP_RESULTS/bench/<exp>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="override, e.g. model.mask_lr=1e-4")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import pytorch_lightning as pl
    import torch

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed)
    config = load_config(args.exp, args.set)
    datamodule = instantiate(config["data"])
    model = instantiate(config["model"], **datamodule.facts)
    datamodule.setup("fit")
    from objdecomp.paths import results_root

    out = Path(args.out) if args.out else results_root() / "bench" / args.exp
    out.mkdir(parents=True, exist_ok=True)
    curve: List[Dict[str, float]] = []
    monitor = make_monitor(args.minutes * 60, args.eval_every, datamodule.val_dataloader(),
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
