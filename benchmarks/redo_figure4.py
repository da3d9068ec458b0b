"""ReDO's Figure 4 from results files: the supervised baseline against the number of labels.

    python benchmarks/redo_figure4.py --results results --out results/figures/redo_figure4.png

For LFW, CUB and Flowers (the paper's panels, left to right) it reads every results file of
``redo_supervised_<dataset>`` (including per-N experiment names such as
``redo_supervised_flowers/n50``) and of ``redo_<dataset>``, as ``objdecomp test`` writes
them. N comes from each file's resolved config (``data.init_args.labelled_subset``). Top row:
test accuracy, bottom row: test IoU, against N on a log axis; the supervised curve joins the
mean over runs at each N, the unsupervised ReDO result is a dashed line (mean over runs). Runs
are counted in each panel's title. ``--prefix quick/`` plots the CPU-sized experiments instead.

The two are scored as they are selected: the supervised F, told that region 0 is the object,
with fixed roles (``test/fg_*``; its configs select on ``val/fg_iou``), since the best
permutation per image would credit it with inverted masks; ReDO, which cannot know which region
is the object, with the best permutation per image (``test/fg_best_*``, Table 1).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Dict, List, Optional, Tuple

from PIL import Image, ImageDraw, ImageFont

DATASETS = (("lfw", "LFW"), ("cub", "CUB"), ("flowers", "Flowers"))  # Fig. 4 order
# (supervised key, unsupervised key, label) per row.
METRICS = (("test/fg_acc", "test/fg_best_acc", "test accuracy"),
           ("test/fg_iou", "test/fg_best_iou", "test IoU"))
PANEL, MARGIN = (380, 270), (40, 34, 16, 44)  # panel size; left, top, right, bottom margins
BLUE, ORANGE, GREY = (31, 119, 180), (255, 127, 14), (200, 200, 200)


def read_results(folder: Path) -> List[dict]:
    """Results records (``objdecomp test`` files) in ``folder`` and its sub-experiments."""
    records = []
    for path in sorted([*folder.glob("*.json"), *folder.glob("*/*.json")]):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and {"metrics", "config"} <= record.keys():
            records.append(record)
    return records


def supervised_curve(records: List[dict], key: str) -> List[Tuple[int, float, int]]:
    """``(N, mean score, runs)`` sorted by N."""
    by_n: Dict[int, List[float]] = defaultdict(list)
    for record in records:
        n = record["config"].get("data", {}).get("init_args", {}).get("labelled_subset")
        if n is not None and key in record["metrics"]:
            by_n[int(n)].append(float(record["metrics"][key]))
    return [(n, mean(v), len(v)) for n, v in sorted(by_n.items())]


def unsupervised_level(records: List[dict], key: str) -> Tuple[Optional[float], int]:
    values = [float(r["metrics"][key]) for r in records if key in r["metrics"]]
    return (mean(values) if values else None), len(values)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def draw_panel(draw: ImageDraw.ImageDraw, origin: Tuple[int, int], title: str,
               curve: List[Tuple[int, float, int]], level: Optional[float]) -> None:
    """One panel: log-x axis of N, linear y axis, supervised curve and unsupervised line."""
    left, top = origin[0] + MARGIN[0], origin[1] + MARGIN[1]
    right, bottom = origin[0] + PANEL[0] - MARGIN[2], origin[1] + PANEL[1] - MARGIN[3]
    small, font = _font(11), _font(13)
    draw.text(((left + right) / 2, origin[1] + 8), title, fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    ns = [n for n, _, _ in curve] or [10, 1000]
    x_lo, x_hi = math.floor(math.log10(min(ns + [10]))), math.ceil(math.log10(max(ns + [100])))
    values = [v for _, v, _ in curve] + ([level] if level is not None else [])
    y_lo = min(0.5, math.floor(min(values, default=0.5) * 10) / 10)

    def xy(n: float, v: float) -> Tuple[float, float]:
        fx = (math.log10(n) - x_lo) / (x_hi - x_lo)
        return left + fx * (right - left), bottom - (v - y_lo) / (1 - y_lo) * (bottom - top)

    for e in range(x_lo, x_hi + 1):
        x, _ = xy(10 ** e, y_lo)
        draw.line([x, top, x, bottom], fill=GREY)
        draw.text((x, bottom + 4), f"10^{e}", fill="black", font=small, anchor="mt")
    steps = round((1 - y_lo) / 0.1)
    for i in range(steps + 1):
        v = y_lo + i * 0.1
        _, y = xy(10 ** x_lo, v)
        draw.line([left, y, right, y], fill=GREY)
        draw.text((left - 4, y), f"{v:.1f}", fill="black", font=small, anchor="rm")
    draw.text(((left + right) / 2, bottom + 20), "number of training samples", fill="black",
              font=small, anchor="mt")
    if level is not None:
        _, y = xy(10 ** x_lo, level)
        for x in range(int(left), int(right), 10):  # dashed
            draw.line([x, y, min(x + 5, right), y], fill=ORANGE, width=2)
    points = [xy(n, v) for n, v, _ in curve]
    if len(points) > 1:
        draw.line(points, fill=BLUE, width=2)
    for x, y in points:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=BLUE)
    if not points and level is None:
        draw.text(((left + right) / 2, (top + bottom) / 2), "no results", fill="grey",
                  font=font, anchor="mm")


def panels(results: Path, prefix: str) -> Dict[Tuple[int, int], Tuple[str, list, Optional[float]]]:
    """``(column, row) -> (title, supervised curve, ReDO level)`` of every panel."""
    out = {}
    for col, (name, label) in enumerate(DATASETS):
        supervised = read_results(results / f"{prefix}redo_supervised_{name}")
        unsupervised = read_results(results / f"{prefix}redo_{name}")
        for row, (supervised_key, unsupervised_key, ylabel) in enumerate(METRICS):
            curve = supervised_curve(supervised, supervised_key)
            level, runs = unsupervised_level(unsupervised, unsupervised_key)
            title = (f"{label}, {ylabel} ({sum(r for _, _, r in curve)} supervised, "
                     f"{runs} ReDO runs)")
            out[col, row] = (title, curve, level)
    return out


def render(results: Path, prefix: str) -> Image.Image:
    width, height = PANEL[0] * len(DATASETS), PANEL[1] * len(METRICS) + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for (col, row), (title, curve, level) in panels(results, prefix).items():
        draw_panel(draw, (col * PANEL[0], row * PANEL[1]), title, curve, level)
    legend_y = height - 16
    draw.line([20, legend_y, 50, legend_y], fill=BLUE, width=2)
    draw.text((56, legend_y), "supervised", fill="black", font=_font(12), anchor="lm")
    for x in range(160, 190, 10):
        draw.line([x, legend_y, x + 5, legend_y], fill=ORANGE, width=2)
    draw.text((196, legend_y), "ours (unsupervised)", fill="black", font=_font(12), anchor="lm")
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results", help="results root ($OBJDECOMP_RESULTS)")
    parser.add_argument("--out", default="results/figures/redo_figure4.png")
    parser.add_argument("--prefix", default="", help="experiment prefix, e.g. quick/")
    args = parser.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    render(Path(args.results), args.prefix).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
