"""What the learning benchmarks share: experiment configs merged as ``make train`` merges them,
their command-line arguments, and a wall-clock training budget with periodic evaluation."""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Any, Dict, List

import pytorch_lightning as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser, exp: str, minutes: float, eval_every: float,
                  threads: int) -> None:
    """The arguments every learning benchmark takes, with its own defaults."""
    parser.add_argument("--exp", default=exp, help="experiment under experiments/")
    parser.add_argument("--minutes", type=float, default=minutes, help="training wall-clock budget")
    parser.add_argument("--eval-every", type=float, default=eval_every,
                        help="seconds of training between evaluations (not charged to the budget)")
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--out", help="picture folder (default: $OBJDECOMP_RESULTS/bench/<exp>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[],
                        help="config override, e.g. model.lr=1e-3 (model., data. or trainer.)")


def output_folder(args: argparse.Namespace) -> Path:
    from objdecomp.paths import results_root

    out = Path(args.out) if args.out else results_root() / "bench" / args.exp
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_config(exp: str, overrides: List[str]) -> Dict[str, Any]:
    """Base + experiment YAML (the experiment wins), then ``section.key=value`` overrides."""
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
    """A YAML value, with ``1e-3`` read as the number meant (YAML 1.1 wants ``1.0e-3``)."""
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
    """The datamodule, then the model with the datamodule's facts (the CLI's argument links)."""
    datamodule = instantiate(config["data"])
    model = instantiate(config["model"], **datamodule.facts)
    return model, datamodule


def format_row(row: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


class WallClockBudget(pl.Callback):
    """Stops training after ``budget_s`` seconds spent in training batches and calls
    :meth:`record` every ``eval_every_s`` of them, at the end, and (``record_first``) after the
    first batch. Time outside the batches (evaluation, pictures) is not charged."""

    def __init__(self, budget_s: float, eval_every_s: float, record_first: bool = False):
        self.budget_s, self.eval_every_s, self.record_first = budget_s, eval_every_s, record_first
        self.train_time, self.since_eval, self.started, self.records = 0.0, 0.0, 0.0, 0

    @property
    def minutes(self) -> float:
        return self.train_time / 60

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        spent = time.perf_counter() - self.started
        self.train_time, self.since_eval = self.train_time + spent, self.since_eval + spent
        done = self.train_time >= self.budget_s
        first = self.record_first and self.records == 0
        if self.since_eval >= self.eval_every_s or done or first:
            self.since_eval, self.records = 0.0, self.records + 1
            self.record(trainer, pl_module, outputs)
        trainer.should_stop = trainer.should_stop or done

    def record(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any) -> None:
        raise NotImplementedError
