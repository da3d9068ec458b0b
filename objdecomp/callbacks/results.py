"""Results files and end-of-run summaries.

``objdecomp test`` writes ``$OBJDECOMP_RESULTS/<experiment>/<run>.json``: the test metrics
(``<run>.train.json`` with ``--eval_split train``),
the resolved config, the evaluated checkpoint (None for an untrained model, which
``objdecomp/tables.py`` ignores), git revision and the revisions that trained the run, global
(optimizer) and batch steps of the checkpoint, hardware, seed and wall times. A fit's start adds
its revision to the run's ``run.json`` (objdecomp/runs.py) and sends the list to the logger.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from objdecomp.paths import results_root, write_atomically
from objdecomp.runs import RunInfo, git_revision, hardware, read_run_record, record_training_start


def log_metrics_table(loggers, split: str, metrics: Dict[str, float]) -> None:
    """The split's metrics as one W&B table ``<split>/metrics`` (metric, value), for comparing runs."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=f"{split}/metrics", columns=["metric", "value"],
                             data=[[name, value] for name, value in sorted(metrics.items())])


class ResultsWriter(pl.Callback):
    """Writes the results JSON after ``test`` and prints one summary line after fit/test."""

    def __init__(self, run: RunInfo, config: Any, subcommand: Optional[str]):
        self.run, self.config, self.subcommand = run, config, subcommand
        self._started = time.time()
        self.path: Optional[Path] = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        revisions = [r["git_revision"] for r in record_training_start(self.run, trainer.global_step)]
        if len(set(revisions)) > 1:
            rank_zero_info(f"run {self.run.name} continues under {revisions[-1]}; trained before by "
                           f"{', '.join(dict.fromkeys(revisions[:-1]))} (run.json)")
        for logger in trainer.loggers:
            logger.log_hyperparams({"git_revisions": revisions})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        last = getattr(checkpoint, "last_model_path", "") or getattr(checkpoint, "best_model_path", "")
        rank_zero_info(
            f"fit done: {trainer.global_step} optimizer steps, epoch {trainer.current_epoch}, "
            f"{time.time() - self._started:.0f} s | {_format(_split_metrics(trainer, 'val'))} | "
            f"checkpoint: {last or 'none'}")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        split = getattr(pl_module, "evaluated_split", "test")
        metrics = _split_metrics(trainer, split)
        if trainer.is_global_zero:
            self.path = self.write(trainer, metrics, split, not_applicable(pl_module, split, metrics))
            log_metrics_table(trainer.loggers, split, metrics)
        rank_zero_info(f"test done ({split} split): {_format(metrics)}\n"
                       f"  results:  {self.path}\n  pictures: {Path(trainer.default_root_dir) / 'pictures'}")

    def write(self, trainer: pl.Trainer, metrics: Dict[str, float], split: str = "test",
              unscored: Optional[Dict[str, str]] = None) -> Path:
        """``<run>.json`` for the test split, ``<run>.<split>.json`` for another split;
        ``unscored``: metric key -> why the method could not be scored by it."""
        ckpt_path = trainer.ckpt_path
        steps = _checkpoint_steps(ckpt_path)
        record = {
            "experiment": self.run.experiment,
            "run": self.run.name,
            "split": split,
            "metrics": metrics,
            "not_applicable": unscored or {},
            "checkpoint": str(ckpt_path) if ckpt_path else None,
            "baseline": getattr(trainer.lightning_module, "baseline_name", None),  # untrained by design
            "global_step": steps.get("global_step", trainer.global_step),
            "batch_step": steps.get("batch_step"),
            "epoch": steps.get("epoch"),
            "seed": self.run.seed,
            "git_revision": git_revision(),
            "training_revisions": [r["git_revision"] for r in
                                   read_run_record(self.run.directory).get("revisions", [])],
            "hardware": {**hardware(), "devices": trainer.num_devices, "nodes": trainer.num_nodes,
                         "world_size": trainer.world_size, "strategy": type(trainer.strategy).__name__,
                         "precision": str(trainer.precision)},
            "test_wall_time_s": round(time.time() - self._started, 2),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "config": _plain(self.config),
        }
        suffix = "" if split == "test" else f".{split}"
        path = results_root() / self.run.experiment / f"{record['run']}{suffix}.json"
        write_atomically(path, json.dumps(record, indent=2, default=str) + "\n")
        return path


def not_applicable(pl_module: pl.LightningModule, split: str,
                   metrics: Dict[str, float]) -> Dict[str, str]:
    """``<split>/<metric>`` -> why the method's decompositions could not be scored by it."""
    needs = getattr(pl_module, "unmet_metric_needs", {})
    return {f"{split}/{name}": need for name, need in sorted(needs.items())
            if f"{split}/{name}" not in metrics}


def _split_metrics(trainer: pl.Trainer, split: str) -> Dict[str, float]:
    return {key: float(value) for key, value in sorted(trainer.callback_metrics.items())
            if key.startswith(f"{split}/")}


def _format(metrics: Dict[str, float]) -> str:
    # Counts of images a metric is undefined on matter only when they are not 0.
    shown = [f"{k}={v:.4f}" for k, v in metrics.items()
             if not math.isnan(v) and not (k.endswith("_n_undefined") and v == 0)][:8]
    return " ".join(shown) or "no metrics"


def _checkpoint_steps(ckpt_path: Optional[str]) -> Dict[str, int]:
    if not ckpt_path or not Path(ckpt_path).is_file():
        return {}
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False, mmap=True)
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    return {"global_step": checkpoint.get("global_step"), "epoch": checkpoint.get("epoch"),
            "batch_step": progress.get("total", {}).get("processed")}


def _plain(config: Any) -> Any:
    """A jsonargparse Namespace (or anything nested) as plain JSON-able data."""
    if hasattr(config, "as_dict"):
        config = config.as_dict()
    if isinstance(config, dict):
        return {str(k): _plain(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_plain(v) for v in config]
    return config if isinstance(config, (str, int, float, bool, type(None))) else str(config)
