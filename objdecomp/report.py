"""``objdecomp report`` (``make report``): one Markdown page with every paper table, the
cross-method comparison and the key figures, from what the results folder holds.

    objdecomp report [--results DIR] [--out FILE]      # default <results>/REPORT.md

Nothing is run: the tables are rendered from the results files (``objdecomp tables``), the
comparison is ``<results>/compare/COMPARISON.md`` (``make compare``), and each key figure is the
newest matching picture under the results folder, linked relative to the page. What is missing
is said, with the command that makes it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional, Tuple

import yaml

from objdecomp.paths import results_root
from objdecomp.tables import TABLES_FILE, collect, render as render_tables


@dataclass(frozen=True)
class KeyFigure:
    title: str
    patterns: Tuple[str, ...]  # globs under the results folder; the newest match is shown
    made_by: str  # the command that makes it


def pictures_of(experiments: str, method: str, name: str) -> Tuple[str, ...]:
    """Where a method's ``name`` picture lies: its experiments' runs and its comparison runs
    (picture files are <run>/pictures/<tag>-<name>.png, objdecomp/callbacks/pictures.py)."""
    return (f"**/{experiments}*/**/pictures/*-{name}.png", f"compare/runs/*/{method}/**/pictures/*-{name}.png")


KEY_FIGURES = (
    KeyFigure("DTI-Sprites: the learned sprites", pictures_of("dti_sprites", "dti-sprites", "sprites"),
              "make train EXP=quick/dti_sprites_tetrominoes && make eval EXP=quick/dti_sprites_tetrominoes"),
    KeyFigure("ReDO: Figure 4 (supervised training curve against the unsupervised model)",
              ("figures/redo_figure4.png",), "make figure4 (after the redo_supervised_* and redo_* runs)"),
    KeyFigure("PerturbGAN: generated layers (background, foreground, mask)",
              pictures_of("perturbgan", "perturbgan", "samples"), "make train EXP=quick/perturbgan_textured_shape"),
    KeyFigure("LAVAE: inferred objects and counts", pictures_of("lavae", "lavae", "inference"),
              "make train EXP=quick/lavae_dsprites"),
    KeyFigure("CIS: latent traversal of one object", pictures_of("cis", "cis", "traversal"),
              "make train EXP=cis_multi_texture (the object VAE stage)"),
    KeyFigure("Cross-method comparison", ("compare/comparison.png",), "make compare"),
)


def newest(results: Path, patterns: Tuple[str, ...]) -> Optional[Path]:
    matches = [path for pattern in patterns for path in results.glob(pattern) if path.is_file()]
    return max(matches, key=lambda path: path.stat().st_mtime) if matches else None


def demoted(markdown: str) -> str:
    """Every heading one level deeper, so that a page becomes a section of the report."""
    return "\n".join("#" + line if line.startswith("#") else line for line in markdown.splitlines())


def figures_section(results: Path, page: Path) -> List[str]:
    lines = ["## Key figures", ""]
    for figure in KEY_FIGURES:
        found = newest(results, figure.patterns)
        if found is None:
            lines += [f"### {figure.title}", "", f"Not made yet: `{figure.made_by}`.", ""]
            continue
        link = Path(*([".."] * len(page.parent.relative_to(results).parts)), found.relative_to(results))
        lines += [f"### {figure.title}", "", f"![{figure.title}]({link.as_posix()})", "",
                  f"`{found.relative_to(results)}`", ""]
    return lines


def build(results: Path, page: Path) -> str:
    tables = yaml.safe_load(TABLES_FILE.read_text())
    comparison = results / "compare" / "COMPARISON.md"
    lines = ["# objdecomp report", "",
             f"Written by `make report` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from "
             f"`{results}`: the papers' tables, the cross-method comparison and the key figures. "
             "Every number of ours comes from a results file; \"not run\" means there is none.", "",
             demoted(render_tables(tables, collect(results))), ""]
    if comparison.is_file():
        # its chart is linked among the key figures, relative to this page
        text = "\n".join(line for line in comparison.read_text().splitlines() if "](comparison.png)" not in line)
        lines += [demoted(text), ""]
    else:
        lines += ["## Cross-method comparison", "", "Not run yet: `make compare`.", ""]
    return "\n".join(lines + figures_section(results, page)) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="objdecomp report", description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=None, help="results root (default $OBJDECOMP_RESULTS)")
    parser.add_argument("--out", type=Path, default=None, help="Markdown file (default <results>/REPORT.md)")
    args = parser.parse_args(argv)
    results = (args.results or results_root()).resolve()
    page = (args.out or results / "REPORT.md").resolve()
    if results not in page.parents:
        raise SystemExit(f"error: --out must lie inside the results folder {results} (its figures are linked relative to it)")
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(build(results, page))
    print(f"written to {page}")
    return 0
