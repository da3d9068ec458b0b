"""Learning check of DTI-Sprites on CPU: train an experiment for a wall-clock budget and watch it learn.

    python benchmarks/bench_dti_learn.py --exp quick/dti_sprites_tetrominoes --minutes 30 [--out DIR]

Builds the model and datamodule from ``experiments/_base/default.yaml`` + ``experiments/<exp>.yaml``
(dataset facts linked from the datamodule, as the CLI does), trains with Lightning's Trainer on
``--threads`` CPU threads, and every ``--eval-every`` seconds of training scores the test split:
ARI-FG as DTI-Sprites computes it (predicted background reassigned to the closest layer), the
standard ARI-FG, ARI on all pixels and the semantic mIoU. Evaluation time is not charged to the
budget. Prints the curve and final numbers (also written to ``<out>/curve.json``) and saves the
learned sprites and a decomposition grid as PNGs in ``--out``. ``--set model.lr=1e-3`` overrides a
config value (``model.``, ``data.`` or ``trainer.``; values parsed as YAML).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import time
from pathlib import Path
from typing import Any, Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[1]


def load_config(exp: str, overrides: List[str]) -> Dict[str, Any]:
    """Merge the base and experiment YAML (the experiment wins) and ``key=value`` overrides."""
    config: Dict[str, Any] = {}
    for path in (ROOT / "experiments/_base/default.yaml", ROOT / f"experiments/{exp}.yaml"):
        merge(config, yaml.safe_load(path.read_text()) or {})
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        target = config.setdefault(section, {})
        target = target.setdefault("init_args", {}) if section in ("model", "data") else target
        target[name] = parse_value(value)
    return config


def parse_value(text: str) -> Any:
    """YAML value, with ``1e-3`` read as a number (YAML 1.1 wants ``1.0e-3``)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def merge(base: Dict[str, Any], update: Dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def instantiate(spec: Dict[str, Any], **extra: Any):
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**{**spec.get("init_args", {}), **extra})


def build(config: Dict[str, Any]):
    """Datamodule, then the model with the datamodule's facts (the CLI's argument links)."""
    datamodule = instantiate(config["data"])
    model = instantiate(config["model"], **datamodule.facts)
    return model, datamodule


def evaluate(model, loader, facts: Dict[str, int]) -> Dict[str, float]:
    """Test-split scores through the model's own decompose() and the suite's metrics."""
    import torch

    from objdecomp.methods.dti_sprites.module import foreground_reassigned
    from objdecomp.metrics import ARI, ARIFG, SemanticSegmentation
    from objdecomp.metrics.functional import adjusted_rand_index

    metrics = {"ari": ARI(), "ari_fg": ARIFG(facts["num_background"])}
    if facts["num_classes"]:
        metrics["semantic"] = SemanticSegmentation(facts["num_classes"])
    dti_scores = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            decomposition = model.decompose(batch["image"])
            for metric in metrics.values():
                if metric.applies_to(batch, decomposition):
                    metric.update(batch, decomposition)
            valid = batch["mask"] >= facts["num_background"]
            segmentation = foreground_reassigned(batch["image"], decomposition)
            dti_scores.append(adjusted_rand_index(segmentation, batch["mask"], valid))
    model.train(was_training)
    scores = torch.cat(dti_scores)
    values = {"ari_fg_dti": float(scores[~scores.isnan()].mean())}
    for name, metric in metrics.items():
        for key, value in metric.compute().items():
            if key in ("", "miou", "macc"):
                values[f"{name}_{key}" if key else name] = float(value)
    return values


def make_monitor(budget_s: float, eval_every_s: float, loader, facts, curve: List[Dict[str, float]]):
    import pytorch_lightning as pl

    class BudgetAndCurve(pl.Callback):
        """Stops after ``budget_s`` seconds of training and records test scores periodically."""

        def __init__(self):
            self.train_time, self.since_eval, self.last = 0.0, 0.0, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.last = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            spent = time.perf_counter() - self.last
            self.train_time += spent
            self.since_eval += spent
            done = self.train_time >= budget_s
            if self.since_eval >= eval_every_s or done:
                self.since_eval = 0.0
                self.record(trainer, pl_module, outputs)
            if done:
                trainer.should_stop = True

        def record(self, trainer, pl_module, outputs):
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            row = {"minutes": self.train_time / 60, "step": trainer.global_step,
                   "epoch": trainer.current_epoch, "loss": loss, **evaluate(pl_module, loader, facts)}
            curve.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)

    return BudgetAndCurve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", default="quick/dti_sprites_tetrominoes")
    parser.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget")
    parser.add_argument("--eval-every", type=float, default=120.0, help="seconds of training between evaluations")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="picture folder (default: $OBJDECOMP_RESULTS/bench/<exp>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="override, e.g. model.lr=1e-3")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import pytorch_lightning as pl
    import torch
    from torchvision.utils import save_image

    from objdecomp.visualize import decomposition_rows, save_rows

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    config = load_config(args.exp, args.set)
    model, datamodule = build(config)
    datamodule.setup("fit")
    datamodule.setup("test")
    facts = datamodule.facts
    curve: List[Dict[str, float]] = []
    monitor = make_monitor(args.minutes * 60, args.eval_every, datamodule.test_dataloader(), facts, curve)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor],
                         max_epochs=config.get("trainer", {}).get("max_epochs", 1000),
                         limit_val_batches=0, num_sanity_val_steps=0,
                         use_distributed_sampler=False)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    from objdecomp.paths import results_root

    out = Path(args.out) if args.out else results_root() / "bench" / args.exp
    out.mkdir(parents=True, exist_ok=True)
    (out / "curve.json").write_text(json.dumps({"exp": args.exp, "set": args.set, "curve": curve}, indent=1))
    model.eval()
    batch = next(iter(datamodule.test_dataloader()))
    batch = {k: v[:8] for k, v in batch.items()}
    with torch.no_grad():
        decomposition = model.decompose(batch["image"])
        save_rows(decomposition_rows(batch["image"], decomposition, batch), out / "decomposition.png")
        for name, picture in model.pictures().items():
            save_image(picture, out / f"{name}.png")
    final = curve[-1] if curve else {}
    print(f"final after {final.get('minutes', 0):.1f} min of training ({time.perf_counter() - start:.0f} s wall): "
          + " ".join(f"{k}={v:.4f}" for k, v in final.items() if isinstance(v, float)))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; pictures in {out}/")


if __name__ == "__main__":
    main()
