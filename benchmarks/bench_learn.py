"""Learning check of any method: train an experiment for a budget and watch its own metrics.

    python benchmarks/bench_learn.py --exp quick/dti_sprites_tetrominoes --minutes 30
    python benchmarks/bench_learn.py --exp quick/redo_textured_shape --steps 6000 --eval-every-steps 500

``make bench-learn EXP=<name> ARGS="..."`` runs it. The experiment is read by the CLI, as
``objdecomp fit`` reads it (its parent chain, the dataset facts linked into the model;
``--set model.lr=1e-3`` is ``--model.init_args.lr=1e-3``), and trained on ``--threads`` CPU
threads until ``--minutes`` of training batches (evaluation and pictures are not charged) or
``--steps`` training batches, the budget to use on a loaded machine. Every ``--eval-every``
seconds of training (or ``--eval-every-steps`` batches) Lightning's validation loop scores the
validation split with the model's own metrics, and one row prints every metric the model has
logged. At the end ``--split`` (default: test) is evaluated exactly as ``objdecomp test
--eval_split`` evaluates it, which also writes the results JSON. The run folder (``--out``,
default ``$OBJDECOMP_RESULTS/bench/<exp>``) gets ``curve.json``, the checkpoints and the
pictures of the method (DecompositionPictures: grids and the method's own ``pictures()``).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl

from objdecomp.callbacks.budget import TrainingBudget


class LearningCurve(pl.Callback):
    """After each validation, one row: the budget spent and every metric the model logged."""

    def __init__(self, budget: TrainingBudget):
        self.budget, self.rows = budget, []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        row = {"minutes": round(self.budget.seconds / 60, 2), "batches": self.budget.batches,
               "step": trainer.global_step, "epoch": trainer.current_epoch,
               **logged(trainer, ("train/", "val/"))}
        self.rows.append(row)
        print(format_row(row), flush=True)


def logged(trainer: pl.Trainer, prefixes) -> Dict[str, float]:
    return {key: float(value) for key, value in sorted(trainer.callback_metrics.items())
            if key.startswith(tuple(prefixes))}


def format_row(row: Dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def cli_arguments(args: argparse.Namespace, out: Path) -> List[str]:
    """The command line of the run: the experiment's files, then the benchmark's settings."""
    from objdecomp.cli import config_arguments, override_argument

    if args.eval_every_steps:
        interval = str(args.eval_every_steps)
    else:
        minutes, seconds = divmod(int(args.eval_every), 60)
        interval = f"00:{minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d}"  # DD:HH:MM:SS
    return [
        *config_arguments(args.exp), f"--experiment=bench/{args.exp}", f"--seed_everything={args.seed}",
        f"--eval_split={args.split}", f"--trainer.default_root_dir={out}",
        f"--checkpoint.dirpath={out / 'checkpoints'}", "--checkpoint.enable_version_counter=false",
        # The budget ends the run; validation on the benchmark's clock, not the config's.
        "--trainer.max_steps=-1", "--trainer.max_epochs=-1", "--trainer.max_time=null",
        f"--trainer.val_check_interval={interval}", "--trainer.check_val_every_n_epoch=null",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *(override_argument(item) for item in args.set),
    ]


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", default="quick/dti_sprites_tetrominoes", help="experiment under experiments/")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget")
    budget.add_argument("--steps", type=int, help="training batches instead of minutes (reproducible)")
    parser.add_argument("--eval-every", type=float, default=120.0,
                        help="seconds of training between validations (at least 1)")
    parser.add_argument("--eval-every-steps", type=int, help="training batches between validations")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="the split evaluated at the end, as objdecomp test --eval_split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="run folder (default: $OBJDECOMP_RESULTS/bench/<exp>)")
    parser.add_argument("--set", action="append", default=[],
                        help="config override, e.g. model.lr=1e-3 (model., data., trainer. ...)")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    import torch

    from objdecomp.cli import ObjdecompCLI
    from objdecomp.paths import results_root

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else results_root() / "bench" / args.exp
    budget = TrainingBudget(None if args.steps else args.minutes * 60, args.steps)
    curve = LearningCurve(budget)
    cli = ObjdecompCLI(args=cli_arguments(args, out), run=False,
                       trainer_defaults={"callbacks": [budget, curve]})
    trainer, model, datamodule = cli.trainer, cli.model, cli.datamodule
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    if not curve.rows or curve.rows[-1]["batches"] != budget.batches:
        trainer.validate(model, datamodule=datamodule, verbose=False)  # the row at the budget's end
    trainer.test(model, datamodule=datamodule, verbose=False)  # objdecomp test's evaluation
    final = logged(trainer, (f"{args.split}/",))
    summary = {"exp": args.exp, "set": args.set, "threads": args.threads, "seed": args.seed,
               "budget": {"minutes": round(budget.seconds / 60, 2), "batches": budget.batches},
               "wall_minutes": round((time.perf_counter() - started) / 60, 1),
               "curve": curve.rows, args.split: final, "best": best_row(cli, curve.rows)}
    (out / "curve.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"final ({args.split} split, after {budget.seconds / 60:.1f} min / {budget.batches} batches "
          f"of training): {format_row(final)}")
    if summary["best"]:
        print(f"best validation row ({cli.run_config.checkpoint.monitor}): {format_row(summary['best'])}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          f"curve, checkpoints and pictures in {out}/")


def best_row(cli, rows: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The row the experiment's checkpoint monitor would select, if it has one."""
    monitor, mode = cli.run_config.checkpoint.monitor, cli.run_config.checkpoint.mode
    scored = [row for row in rows if monitor in row]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda row: row[monitor])


if __name__ == "__main__":
    main()
