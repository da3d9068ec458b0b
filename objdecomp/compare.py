"""``objdecomp compare`` (``make compare``): every method on every procedural benchmark, one protocol.

The grid is data, ``experiments/comparison.yaml``: a cell is a method's quick config (or its
stages) on a benchmark (one ``data`` block for every method on it). Each run of a cell trains for
one budget of training batches (``--budget`` minutes or ``--steps``), then its last weights are
tested on the benchmark's test split by the same metrics for every method (objdecomp/metrics).
Per run, ``<out>/runs/<benchmark>/<method>/seed<k>.json`` is written when it is done; the runs
then give ``<out>/COMPARISON.md`` (mean ± std over seeds, with n), ``<out>/comparison.png`` and,
with ``--wandb``, the same as a W&B table.

Resumable: each run is a subprocess, and a finished run (its JSON) is never run again, so a
killed compare continues where it stopped (the run it was in starts over). A run that fails is
recorded with its error, shown in the table, and retried by the next compare.

    objdecomp compare [--budget MINUTES | --steps N] [--seeds 0 1 2] [--only GLOB] [--out DIR]
    objdecomp compare --render      # the table and chart from the runs done so far
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from objdecomp.paths import EXPERIMENTS, results_root, write_atomically
from objdecomp.tables import cell as mean_std

GRID_FILE = EXPERIMENTS / "comparison.yaml"
LOG_TAIL_LINES = 20  # of a failed run's log, kept in its record


# --- the grid --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """A method on a benchmark: its stages (experiments) and how the budget is shared by them."""

    method: str
    benchmark: str
    stages: Tuple[str, ...]
    shares: Tuple[float, ...]
    overrides: Tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``<benchmark>/<method>``, e.g. ``tetrominoes/dti-sprites``: its folder and ``--only`` name."""
        return f"{self.benchmark}/{self.method.lower().replace(' ', '-')}"


@dataclass
class Grid:
    budget_minutes: float
    seeds: List[int]
    metrics: Dict[str, str]  # column title -> metric key
    chart_metrics: List[str]
    benchmarks: Dict[str, Dict[str, Any]]
    cells: List[Cell] = field(default_factory=list)


def load_grid(path: Path = GRID_FILE) -> Grid:
    spec = yaml.safe_load(path.read_text())
    cells = [Cell(method=c["method"], benchmark=c["benchmark"], stages=tuple(c["stages"]),
                  shares=tuple(c.get("shares", [1.0 / len(c["stages"])] * len(c["stages"]))),
                  overrides=tuple(c.get("set", [])))
             for c in spec["cells"]]
    grid = Grid(spec["budget_minutes"], list(spec["seeds"]), dict(spec["metrics"]),
                list(spec["chart_metrics"]), dict(spec["benchmarks"]), cells)
    check_grid(grid)
    return grid


def check_grid(grid: Grid) -> None:
    """A grid whose cells name unknown benchmarks or experiments, or whose shares do not add up
    to the budget, is refused before anything trains."""
    from objdecomp.cli import experiment_names

    known = set(experiment_names())
    for cell in grid.cells:
        problems = [f"unknown benchmark '{cell.benchmark}'"] if cell.benchmark not in grid.benchmarks else []
        problems += [f"unknown experiment '{stage}'" for stage in cell.stages if stage not in known]
        if len(cell.shares) != len(cell.stages) or abs(sum(cell.shares) - 1) > 1e-6:
            problems.append(f"shares {list(cell.shares)} must be one per stage and sum to 1")
        if problems:
            raise ValueError(f"{GRID_FILE.name}, cell {cell.name}: {'; '.join(problems)}")
    unknown = set(grid.chart_metrics) - set(grid.metrics)
    if unknown:
        raise ValueError(f"{GRID_FILE.name}: chart_metrics {sorted(unknown)} are not columns of metrics")


def selected(cells: Sequence[Cell], patterns: Sequence[str]) -> List[Cell]:
    chosen = [c for c in cells if not patterns or any(fnmatch.fnmatch(c.name, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"error: --only {' '.join(patterns)} matches no cell; cells: "
                         + ", ".join(c.name for c in cells))
    return chosen


# --- one run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    minutes: Optional[float] = None
    steps: Optional[int] = None

    def share(self, fraction: float) -> Dict[str, Optional[float]]:
        """TrainingBudget's arguments for one stage's part of the budget."""
        if self.steps is not None:
            return {"seconds": None, "steps": max(1, round(self.steps * fraction))}
        return {"seconds": self.minutes * 60 * fraction, "steps": None}

    def describe(self) -> str:
        return f"{self.steps} training batches" if self.steps is not None else \
            f"{self.minutes:g} min of training batches"


def run_path(out: Path, cell: Cell, seed: int, suffix: str = ".json") -> Path:
    return out / "runs" / cell.name / f"seed{seed}{suffix}"


def stage_arguments(cell: Cell, stage: str, data: Dict[str, Any], seed: int, folder: Path,
                    init_checkpoint: Optional[str]) -> List[str]:
    """The CLI arguments of one stage: its experiment, the benchmark's data, the cell's overrides,
    and a run that ends on the budget alone and is only tested at the end."""
    from objdecomp.cli import config_arguments, override_argument

    return [
        *config_arguments(stage), f"--experiment=compare/{cell.name}", f"--seed_everything={seed}",
        f"--data={json.dumps(data)}", *(override_argument(item) for item in cell.overrides),
        f"--trainer.default_root_dir={folder}", f"--checkpoint.dirpath={folder / 'checkpoints'}",
        "--checkpoint.enable_version_counter=false", "--checkpoint.monitor=null",
        "--trainer.max_steps=-1", "--trainer.max_epochs=-1", "--trainer.max_time=null",
        "--trainer.limit_val_batches=0", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        *([f"--model.init_args.init_checkpoint={init_checkpoint}"] if init_checkpoint else []),
    ]


def train_and_test(cell: Cell, data: Dict[str, Any], seed: int, budget: Budget,
                   folder: Path) -> Dict[str, Any]:
    """Trains the cell's stages in turn, each from the one before, and tests the last weights."""
    from objdecomp.callbacks.budget import TrainingBudget
    from objdecomp.cli import ObjdecompCLI

    checkpoint, stages, started = None, [], time.perf_counter()
    for index, (stage, share) in enumerate(zip(cell.stages, cell.shares)):
        spent = TrainingBudget(**budget.share(share))
        args = stage_arguments(cell, stage, data, seed, folder / f"stage{index}", checkpoint)
        cli = ObjdecompCLI(args=args, run=False, trainer_defaults={"callbacks": [spent]})
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        checkpoint = cli.trainer.checkpoint_callback.last_model_path
        stages.append({"experiment": stage, "batches": spent.batches,
                       "minutes": round(spent.seconds / 60, 2)})
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint, verbose=False)
    metrics = {key.split("/", 1)[1]: float(value) for key, value in cli.trainer.callback_metrics.items()
               if key.startswith("test/")}
    unscored = {name: need for name, need in cli.model.unmet_metric_needs.items() if name not in metrics}
    return {"cell": cell.name, "method": cell.method, "benchmark": cell.benchmark, "seed": seed,
            "budget": {"minutes": budget.minutes, "steps": budget.steps}, "stages": stages, "metrics": metrics,
            "not_applicable": unscored, "checkpoint": checkpoint,
            "wall_minutes": round((time.perf_counter() - started) / 60, 2)}


def run_one(grid: Grid, name: str, seed: int, budget: Budget, out: Path, threads: Optional[int]) -> None:
    """``--run``: one run of one cell, in this process; its JSON is written last, atomically."""
    import torch

    from objdecomp.runs import git_revision, hardware

    if threads:
        torch.set_num_threads(threads)
    cell = next((c for c in grid.cells if c.name == name), None)
    if cell is None:
        raise SystemExit(f"error: no cell '{name}' in {GRID_FILE.name}")
    record = train_and_test(cell, grid.benchmarks[cell.benchmark]["data"], seed, budget,
                            run_path(out, cell, seed, suffix=""))
    record.update(git_revision=git_revision(), hardware=hardware(),
                  date=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_atomically(run_path(out, cell, seed), json.dumps(record, indent=1) + "\n")


# --- the whole grid ----------------------------------------------------------------------------
def run_grid(grid: Grid, cells: Sequence[Cell], seeds: Sequence[int], budget: Budget, out: Path,
             threads: Optional[int]) -> None:
    """Runs each unfinished (cell, seed) in a subprocess; a failure is recorded, not fatal."""
    todo = [(c, s) for c in cells for s in seeds if not run_path(out, c, s).exists()]
    print(f"compare: {len(cells) * len(seeds) - len(todo)} runs done, {len(todo)} to run "
          f"({budget.describe()} each) in {out}", flush=True)
    for number, (cell, seed) in enumerate(todo, 1):
        log = run_path(out, cell, seed, suffix=".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "objdecomp", "compare", "--run", cell.name,
                   "--seed", str(seed), "--out", str(out), *budget_flags(budget),
                   *(["--threads", str(threads)] if threads else [])]
        print(f"[{number}/{len(todo)}] {cell.name} seed {seed} ... ", end="", flush=True)
        started = time.perf_counter()
        with log.open("w") as stream:
            status = subprocess.call(command, stdout=stream, stderr=subprocess.STDOUT)
        failed = run_path(out, cell, seed, suffix=".failed.json")
        if status == 0:
            failed.unlink(missing_ok=True)
            print(f"done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        else:
            tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            write_atomically(failed, json.dumps({"cell": cell.name, "seed": seed, "status": status,
                                                 "log": str(log), "tail": tail}, indent=1))
            print(f"FAILED (exit {status}; {log})", flush=True)


def budget_flags(budget: Budget) -> List[str]:
    return ["--steps", str(budget.steps)] if budget.steps is not None else ["--budget", str(budget.minutes)]


# --- the table and the chart -------------------------------------------------------------------
def load_runs(out: Path, cell: Cell) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """The finished runs of a cell and its failed ones (a failure a later run made good is gone)."""
    folder = out / "runs" / cell.name
    finished = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*.json"))
                if not p.name.endswith(".failed.json")]
    failed = [json.loads(p.read_text()) for p in sorted(folder.glob("seed*.failed.json"))]
    return finished, failed


def summary(finished: List[Dict[str, Any]], failed: List[Dict[str, Any]], key: str) -> str:
    """One table cell: mean ± std (n) over the finished runs, else why there is no number."""
    value = mean_std([r["metrics"] for r in finished], key, scale=1.0, digits=3)
    if value != "not run":
        return value
    reasons = sorted({r["not_applicable"][key] for r in finished if key in r.get("not_applicable", {})})
    if reasons:
        return "n/a: " + "; ".join(reasons)
    if finished:
        return "n/a: not computed on this benchmark's ground truth"
    return f"failed ({len(failed)} runs; see the logs)" if failed else "not run"


def render_markdown(grid: Grid, cells: Sequence[Cell], out: Path) -> Tuple[str, List[List[str]]]:
    """COMPARISON.md's text, and its rows (benchmark, method, one column per metric, runs)."""
    columns = list(grid.metrics)
    lines = ["# Cross-method comparison", "",
             "Every method's quick config on every procedural benchmark it applies to "
             "(experiments/comparison.yaml), trained for the same budget per run, its last weights "
             "tested on the benchmark's test split by the same metrics. Mean ± std over seeds "
             "(n = finished runs); n/a: the metric cannot score that method, with the reason. "
             f"Written by `make compare` on {datetime.now(timezone.utc):%Y-%m-%d}.", ""]
    rows = []
    for benchmark, spec in grid.benchmarks.items():
        on_benchmark = [c for c in cells if c.benchmark == benchmark]
        if not on_benchmark:
            continue
        lines += [f"## {spec['title']}", ""] + ([spec["note"], ""] if spec.get("note") else [])
        lines += ["| method | " + " | ".join(columns) + " | runs |",
                  "|---" * (len(columns) + 2) + "|"]
        for cell in on_benchmark:
            finished, failed = load_runs(out, cell)
            values = [summary(finished, failed, grid.metrics[c]) for c in columns]
            lines.append(f"| {cell.method} | " + " | ".join(values) + f" | {runs_note(finished, failed)} |")
            rows.append([spec["title"], cell.method, *values, runs_note(finished, failed)])
        lines.append("")
    return "\n".join(lines), rows


def runs_note(finished: List[Dict[str, Any]], failed: List[Dict[str, Any]]) -> str:
    """How the runs were trained: budget, batches per stage (mean), failures."""
    if not finished:
        return f"{len(failed)} failed" if failed else "none"
    stages = zip(*(r["stages"] for r in finished))
    batches = " + ".join(f"{sum(s['batches'] for s in stage) / len(finished):.0f}" for stage in stages)
    minutes = finished[0]["budget"]["minutes"]
    note = f"{minutes:g} min: {batches} batches" if minutes is not None else f"{batches} batches"
    return note + (f"; {len(failed)} failed" if failed else "")


def chart_data(grid: Grid, cells: Sequence[Cell], out: Path) -> Dict[str, Dict[str, Dict[str, Tuple[float, float]]]]:
    """benchmark title -> method -> chart metric -> (mean, std) over the finished runs."""
    import statistics

    panels: Dict[str, Dict[str, Dict[str, Tuple[float, float]]]] = {}
    for cell in cells:
        finished, _ = load_runs(out, cell)
        bars = {}
        for title in grid.chart_metrics:
            values = [r["metrics"][grid.metrics[title]] for r in finished
                      if grid.metrics[title] in r["metrics"]]
            if values:
                bars[title] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        panels.setdefault(grid.benchmarks[cell.benchmark]["title"], {})[cell.method] = bars
    return panels


def render(grid: Grid, cells: Sequence[Cell], out: Path, wandb_log: bool) -> Path:
    from objdecomp.visualize import bar_chart

    text, rows = render_markdown(grid, cells, out)
    report = out / "COMPARISON.md"
    chart = out / "comparison.png"
    bar_chart(chart_data(grid, cells, out), grid.chart_metrics, chart)
    write_atomically(report, text + f"\n![the comparison as a chart]({chart.name})\n")
    print(text)
    print(f"\nwritten to {report} and {chart}")
    if wandb_log:
        log_to_wandb(["benchmark", "method", *grid.metrics, "runs"], rows, chart)
    return report


def log_to_wandb(columns: List[str], rows: List[List[str]], chart: Path) -> None:
    """The comparison as one W&B run (job type ``compare``, its files beside the chart): a
    table and the chart."""
    import wandb

    from objdecomp.runs import WANDB_PROJECT, wandb_mode

    if wandb.run is not None:  # an earlier run in this process is over
        wandb.finish()
    mode, why = wandb_mode()
    print(f"W&B: {mode} ({why})")
    run = wandb.init(project=WANDB_PROJECT, job_type="compare", mode=mode, dir=str(chart.parent),
                     name=f"compare-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}",
                     settings=wandb.Settings(silent=True, init_timeout=30))
    run.log({"comparison": wandb.Table(columns=columns, data=rows),
             "comparison_chart": wandb.Image(str(chart))})
    run.finish()


# --- the command -------------------------------------------------------------------------------
def parse_arguments(argv: Optional[List[str]], grid: Grid) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="objdecomp compare", description=__doc__.split("\n")[0])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                        help=f"minutes of training batches per run (default {grid.budget_minutes:g}; "
                             "on a GPU give what a run needs there)")
    budget.add_argument("--steps", type=int, default=None, help="training batches per run instead of minutes")
    parser.add_argument("--seeds", type=int, nargs="+", default=grid.seeds)
    parser.add_argument("--only", nargs="+", default=[], metavar="GLOB",
                        help="cells to run, e.g. 'tetrominoes/*' or '*/lavae' (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="default: <results>/compare")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--render", action="store_true", help="only render the runs done so far")
    parser.add_argument("--wandb", action="store_true", help="also log the table and chart to W&B")
    parser.add_argument("--run", default=None, help=argparse.SUPPRESS)  # one run, in this process
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    grid = load_grid()
    args = parse_arguments(argv, grid)
    budget = Budget(steps=args.steps) if args.steps is not None else \
        Budget(minutes=args.budget if args.budget is not None else grid.budget_minutes)
    out = args.out or results_root() / "compare"
    if args.run:
        run_one(grid, args.run, args.seed, budget, out, args.threads)
        return 0
    cells = selected(grid.cells, args.only)
    if not args.render:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads or 1))
        run_grid(grid, cells, args.seeds, budget, out, args.threads)
    render(grid, cells, out, args.wandb)
    return 0
