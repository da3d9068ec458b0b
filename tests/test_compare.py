"""The cross-method comparison (objdecomp/compare.py): the grid, resuming, the table and the chart."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from objdecomp import compare
from objdecomp.compare import Budget, Cell, load_grid, run_path

GRID = load_grid()


def finished_run(out: Path, cell: Cell, seed: int, metrics: dict, not_applicable: dict = None,
                 batches: int = 100) -> None:
    record = {"cell": cell.name, "method": cell.method, "benchmark": cell.benchmark, "seed": seed,
              "budget": {"minutes": 2.0, "steps": None}, "metrics": metrics,
              "stages": [{"experiment": s, "batches": batches, "minutes": 2.0} for s in cell.stages],
              "not_applicable": not_applicable or {}}
    compare.write_atomically(run_path(out, cell, seed), json.dumps(record))


def test_the_grid_covers_every_method_and_benchmark_with_known_experiments():
    methods = {cell.method for cell in GRID.cells}
    assert methods >= {"DTI-Sprites", "ReDO", "PerturbGAN", "LAVAE", "CIS", "MONet", "β-VAE"}
    assert set(GRID.benchmarks) == {cell.benchmark for cell in GRID.cells}
    assert {"tetrominoes", "multi_dsprites", "multi_texture", "multi_mnist", "textured_shape",
            "colored_2mnist"} <= set(GRID.benchmarks)
    assert len({cell.name for cell in GRID.cells}) == len(GRID.cells), "cell names are unique"


def test_a_grid_naming_an_unknown_experiment_or_bad_shares_is_refused(tmp_path):
    spec = (compare.GRID_FILE).read_text()
    broken = tmp_path / "comparison.yaml"
    broken.write_text(spec.replace("stages: [quick/redo_colored_mnist]", "stages: [quick/no_such_run]"))
    with pytest.raises(ValueError, match="unknown experiment 'quick/no_such_run'"):
        load_grid(broken)
    broken.write_text(spec.replace("shares: [0.7, 0.3]", "shares: [0.7, 0.7]"))
    with pytest.raises(ValueError, match="sum to 1"):
        load_grid(broken)


def test_budget_shares_split_minutes_and_steps_between_stages():
    assert Budget(minutes=10).share(0.3) == {"seconds": 180.0, "steps": None}
    assert Budget(steps=100).share(0.7) == {"seconds": None, "steps": 70}
    assert Budget(steps=1).share(0.3)["steps"] == 1  # every stage trains


def test_only_selects_cells_by_glob_and_an_empty_selection_is_an_error():
    assert {c.method for c in compare.selected(GRID.cells, ["tetrominoes/*"])} == {"DTI-Sprites", "MONet"}
    with pytest.raises(SystemExit, match="matches no cell"):
        compare.selected(GRID.cells, ["nowhere/*"])


def test_stage_arguments_give_the_benchmark_data_the_overrides_and_the_warm_start(tmp_path):
    cell = next(c for c in GRID.cells if c.method == "LAVAE" and c.benchmark == "multi_mnist")
    data = GRID.benchmarks["multi_mnist"]["data"]
    args = compare.stage_arguments(cell, cell.stages[0], data, 3, tmp_path, "stage0/last.ckpt")
    assert f"--data={json.dumps(data)}" in args and "--seed_everything=3" in args
    assert "--model.init_args.sprite_size=17" in args
    assert args[-1] == "--model.init_args.init_checkpoint=stage0/last.ckpt"
    assert "--trainer.limit_val_batches=0" in args  # the last weights are tested, none selected


def test_a_compare_never_reruns_a_finished_run_and_retries_a_failed_one(tmp_path, monkeypatch):
    cells = compare.selected(GRID.cells, ["tetrominoes/*"])
    finished_run(tmp_path, cells[0], 0, {"ari": 0.5})
    calls = []

    def fake_call(command, stdout, stderr):
        calls.append(command)
        stdout.write("Traceback ...\nRuntimeError: out of memory\n")
        return 1

    monkeypatch.setattr(compare.subprocess, "call", fake_call)
    compare.run_grid(GRID, cells, [0], Budget(steps=2), tmp_path, threads=None)
    assert [c[c.index("--run") + 1] for c in calls] == [cells[1].name]
    failure = json.loads(run_path(tmp_path, cells[1], 0, ".failed.json").read_text())
    assert failure["status"] == 1 and "RuntimeError: out of memory" in failure["tail"]
    compare.run_grid(GRID, cells, [0], Budget(steps=2), tmp_path, threads=None)
    assert len(calls) == 2, "the failed run is tried again, the finished one is not"


def test_the_table_gives_mean_std_and_n_and_says_why_a_metric_is_missing(tmp_path):
    dti, monet = compare.selected(GRID.cells, ["tetrominoes/*"])
    finished_run(tmp_path, dti, 0, {"ari": 0.4, "ari_fg": 0.8, "count": 1.0})
    finished_run(tmp_path, dti, 1, {"ari": 0.6, "ari_fg": 0.9, "count": 1.0})
    finished_run(tmp_path, monet, 0, {"ari": 0.1}, {"count": "the method does not count objects"})
    compare.write_atomically(run_path(tmp_path, monet, 1, ".failed.json"), json.dumps({"tail": []}))
    text, rows = compare.render_markdown(GRID, [dti, monet], tmp_path)
    dti_row = next(line for line in text.splitlines() if line.startswith("| DTI-Sprites"))
    monet_row = next(line for line in text.splitlines() if line.startswith("| MONet"))
    assert "0.500 ± 0.141 (n=2)" in dti_row and "0.850 ± 0.071 (n=2)" in dti_row
    assert "n/a: the method does not count objects" in monet_row
    assert "n/a: not computed" in monet_row  # ARI-FG: finished, but no value and no reason
    assert "1 failed" in monet_row
    assert rows[0][:3] == [GRID.benchmarks["tetrominoes"]["title"], "DTI-Sprites", "0.500 ± 0.141 (n=2)"]
    assert "## Tetrominoes" in text and "## Multi-Texture" not in text  # only benchmarks with cells
    single = compare.selected(GRID.cells, ["textured_shape/redo"])
    assert "ARI-FG only says" in compare.render_markdown(GRID, single, tmp_path)[0]  # the benchmark's note
    assert compare.summary([], [], "ari") == "not run"


def test_render_writes_the_report_and_a_chart_with_a_panel_per_benchmark(tmp_path):
    cells = compare.selected(GRID.cells, ["tetrominoes/*", "textured_shape/redo"])
    for seed, value in enumerate((0.7, 0.9)):
        finished_run(tmp_path, cells[0], seed, {"ari_fg": value, "matched_miou": value / 2, "fg_iou": value})
    finished_run(tmp_path, cells[2], 0, {"fg_iou": 0.6})
    report = compare.render(GRID, cells, tmp_path, wandb_log=False)
    assert "comparison.png" in report.read_text()
    chart = Image.open(tmp_path / "comparison.png").convert("RGB")
    bars = sum(1 for p in chart.getdata() if p not in ((255, 255, 255), (0, 0, 0), (220, 220, 220)))
    assert chart.height > 2 * 160, "a panel per benchmark"
    assert bars > 500, "the bars are drawn"


@pytest.mark.slow
def test_a_killed_compare_continues_where_it_stopped(tmp_path):
    """Two real runs of 2 batches: compare is killed once the first is written; the next
    compare runs the second only, and the table holds both."""
    out = tmp_path / "compare"
    command = [sys.executable, "-m", "objdecomp", "compare", "--steps", "2", "--seeds", "0",
               "--only", "tetrominoes/*", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    done = run_path(out, GRID.cells[0], 0)
    deadline = time.time() + 300
    while not done.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert done.exists(), first.stdout.read().decode()[-2000:]
    written = done.stat().st_mtime_ns
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "1 runs done, 1 to run" in second.stdout
    assert done.stat().st_mtime_ns == written, "the finished run was not run again"
    table = (out / "COMPARISON.md").read_text()
    assert "(n=1)" in next(line for line in table.splitlines() if line.startswith("| MONet"))


def test_the_comparison_goes_to_wandb_as_a_table_and_the_chart(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    chart = tmp_path / "comparison.png"
    Image.new("RGB", (8, 8), "white").save(chart)
    compare.log_to_wandb(["benchmark", "method", "ARI"], [["Tetrominoes", "MONet", "0.5 (n=1)"]], chart)
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/comparison_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["benchmark", "method", "ARI"]
    assert table["data"] == [["Tetrominoes", "MONet", "0.5 (n=1)"]]
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/comparison_chart_*.png"))
