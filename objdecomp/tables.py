"""Render the papers' tables from ``$OBJDECOMP_RESULTS/**/*.json`` beside the papers' numbers.

The tables are data (``experiments/paper_tables.yaml``): each cell names the experiment
whose runs fill it, the metric key in the results files and the paper's number (as the
paper prints it). Our column is the mean ± std over the runs found, with their
count, or "not run". Nothing is ever filled from the paper. A cell may carry a ``note`` (shown
in a last column) and ``drop_outlier``, a results key by which one outlier run is left out
as the paper did (:func:`outlier_run`).

    objdecomp tables [--results DIR] [--out FILE] [--method dti_sprites] [--experiment NAME]
    objdecomp tables --splits redo_cub     # the splits its cells need evaluated: "test train"
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from objdecomp.paths import EXPERIMENTS, results_root

TABLES_FILE = EXPERIMENTS / "paper_tables.yaml"


def collect(results: Path) -> Dict[str, List[Dict[str, float]]]:
    """Experiment name -> list of metric dicts, one per results file (one per run). A file that
    names neither a checkpoint nor a baseline (e.g. GrabCut) scored an untrained model by
    mistake and is left out."""
    runs: Dict[str, List[Dict[str, float]]] = defaultdict(list)
    for path in sorted(results.rglob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # not a results file (W&B metadata, a file being written)
        if isinstance(record, dict) and "experiment" in record and "metrics" in record \
                and (record.get("checkpoint") or record.get("baseline")):
            runs[record["experiment"]].append(record["metrics"])
    return runs


OUTLIER_RATIO = 1.2  # DTI-Sprites' outlier: 1.93e-3 against a median of 1.515e-3 (1.27x)


def outlier_run(runs: List[Dict[str, float]], key: str) -> Optional[int]:
    """The run the paper leaves out (DTI-Sprites Sec. 4.1, "based on its high reconstruction
    loss compared to the others"): with at least 3 runs, the one with the highest ``key`` if it
    exceeds ``OUTLIER_RATIO`` times the median of the others; None otherwise."""
    scored = [(r[key], i) for i, r in enumerate(runs) if key in r and r[key] == r[key]]
    if len(scored) < 3:
        return None
    worst, index = max(scored)
    others = [value for value, i in scored if i != index]
    return index if worst > OUTLIER_RATIO * statistics.median(others) else None


def cell(runs: List[Dict[str, float]], key: str, scale: float, digits: int,
         drop_outlier: Optional[str] = None) -> str:
    """``mean ± std (n=…)`` of ``key`` over runs, or ``not run``; with ``drop_outlier``, without
    the run :func:`outlier_run` picks by that key."""
    left_out = outlier_run(runs, drop_outlier) if drop_outlier else None
    runs = [r for i, r in enumerate(runs) if i != left_out]
    values = [r[key] * scale for r in runs if key in r and r[key] == r[key]]
    if not values:
        return "not run"
    mean, dropped = statistics.fmean(values), "" if left_out is None else ", 1 outlier left out"
    if len(values) == 1:
        return f"{mean:.{digits}f} (n=1{dropped})"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f} (n={len(values)}{dropped})"


def render(tables: dict, runs: Dict[str, List[Dict[str, float]]],
           method: Optional[str] = None) -> str:
    """All tables as Markdown: one row per cell, the paper's number beside ours."""
    lines = ["# Reproduced tables", "",
             "Ours: mean ± std over the runs in the results folder (n = runs). "
             "Paper: the number printed in the paper.", ""]
    for name, method_tables in tables.items():
        if method and name != method:
            continue
        lines += [f"## {name}", ""]
        for table in method_tables:
            noted = any("note" in c for c in table["cells"])
            lines += [f"### {table['title']}", "",
                      "| cell | metric | paper | ours | experiment |" + (" note |" if noted else ""),
                      "|---|---|---|---|---|" + ("---|" if noted else "")]
            scale, digits = table.get("scale", 1.0), table.get("digits", 3)
            for c in table["cells"]:
                ours = cell(runs.get(c["experiment"], []), c["key"], scale, digits,
                            c.get("drop_outlier"))
                note = f" {c.get('note', '')} |" if noted else ""
                lines.append(f"| {c['cell']} | {c['metric']} | {c['paper']} | {ours} | "
                             f"`{c['experiment']}` |{note}")
            if table.get("note"):
                lines += ["", table["note"]]
            lines.append("")
    return "\n".join(lines)


def splits_needed(tables: dict, experiment: str) -> List[str]:
    """The evaluation splits the cells of ``experiment`` read (a key's prefix), test first."""
    splits = {c["key"].split("/", 1)[0] for method_tables in tables.values()
              for table in method_tables for c in table["cells"] if c["experiment"] == experiment}
    return ["test"] + sorted(splits - {"test"})


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="objdecomp tables", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=None, help="results root (default $OBJDECOMP_RESULTS)")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file (default <results>/TABLES.md)")
    parser.add_argument("--method", default=None, help="only this method's tables")
    parser.add_argument("--experiment", default=None,
                        help="print only this experiment's rows (the file still gets every table)")
    parser.add_argument("--splits", metavar="EXPERIMENT", default=None,
                        help="print the splits the experiment's cells need evaluated, and exit")
    args = parser.parse_args(argv)
    tables = yaml.safe_load(TABLES_FILE.read_text())
    if args.splits:
        print(" ".join(splits_needed(tables, args.splits)))
        return
    results = args.results or results_root()
    text = render(tables, collect(results), args.method)
    out = args.out or results / "TABLES.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    if args.experiment:
        rows = [line for line in text.splitlines() if f"`{args.experiment}`" in line]
        print("\n".join(rows) if rows else f"no paper table cell reads {args.experiment}")
    else:
        print(text)
    print(f"\nwritten to {out}")
