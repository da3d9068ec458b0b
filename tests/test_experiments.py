"""Experiment files: each resolves through its parents, parses (class paths resolve, no key is
unknown) and holds only what differs from its parent chain."""

import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
import yaml

from objdecomp.cli import (BASE_CONFIG, PARENT_KEY, ObjdecompCLI, config_arguments,
                           expand_config_arguments, experiment_config_files, experiment_names)
from objdecomp.paths import EXPERIMENTS, REPO_ROOT

NAMES = experiment_names()
VARIANTS = [name for name in NAMES if len(experiment_config_files(name)) > 2]


def test_there_are_experiments_and_no_other_yaml_among_them():
    assert NAMES, "no experiment files found"
    assert not [n for n in NAMES if n.startswith(("_base/", "sweeps/")) or n in ("paper_tables", "comparison")]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_experiments_lists_the_same_names():
    listed = subprocess.run(["make", "--no-print-directory", "experiments"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_experiment_config_parses(name: str, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    with pytest.raises(SystemExit) as exit_info:
        ObjdecompCLI(args=["fit", *config_arguments(name), "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err[-2000:]
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"] and resolved["data"]["class_path"]
    for fact in ("image_size", "channels", "max_objects", "num_classes", "num_background"):
        assert fact not in (resolved["model"].get("init_args") or {}), f"{fact} is linked, not configured"


# --- parents: configs as diffs -------------------------------------------------------------------
def _leaves(tree: Any, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """``(dotted key, value)`` of every value a YAML tree sets. Lists are values, except lists
    of classes (callbacks), which the parser merges item by item with a parent's list of the
    same length: an item's key is its position and class."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(tree, list) and tree and all(isinstance(v, dict) and "class_path" in v for v in tree):
        for index, item in enumerate(tree):
            item = dict(item)
            yield from _leaves(item, f"{prefix}{index}:{item.pop('class_path')}.")
    else:
        yield prefix[:-1], tree


def _set_by(paths) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for path in paths:
        values.update(_leaves(yaml.safe_load(path.read_text()) or {}))
    return values


def test_every_quick_config_is_a_diff_of_its_full_size_experiment():
    alone = [name for name in NAMES if name.startswith("quick/") and name not in VARIANTS]
    assert not alone, f"quick configs without a '{PARENT_KEY}:' (copies instead of diffs): {alone}"


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_holds_only_its_diff(name: str):
    *chain, own = experiment_config_files(name)
    inherited = _set_by(chain)
    repeated = [key for key, value in _leaves(yaml.safe_load(own.read_text()))
                if key != PARENT_KEY and key in inherited and inherited[key] == value]
    assert not repeated, f"{name} repeats what its parents already set: {repeated}"


def test_chain_is_base_then_ancestors_then_file():
    files = experiment_config_files("dti_sprites_multi_dsprites2_exhaustive")
    assert [f.relative_to(EXPERIMENTS.resolve()).as_posix() for f in files] == [
        "_base/default.yaml", "dti_sprites_multi_dsprites.yaml", "dti_sprites_multi_dsprites2.yaml",
        "dti_sprites_multi_dsprites2_exhaustive.yaml"]
    assert experiment_config_files(EXPERIMENTS / "dti_sprites_tetrominoes.yaml") == [
        BASE_CONFIG.resolve(), (EXPERIMENTS / "dti_sprites_tetrominoes.yaml").resolve()]


def test_a_file_outside_experiments_may_name_a_parent(tmp_path: Path):
    alone, child = tmp_path / "alone.yaml", tmp_path / "child.yaml"
    alone.write_text("trainer: {max_steps: 3}\n")
    child.write_text("parent: dti_sprites_tetrominoes\ntrainer: {max_steps: 3}\n")
    assert experiment_config_files(alone) == [alone.resolve()]
    assert experiment_config_files(child)[-2:] == [
        (EXPERIMENTS / "dti_sprites_tetrominoes.yaml").resolve(), child.resolve()]


def test_missing_parent_and_cycles_are_clear_errors(tmp_path: Path):
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("parent: no_such_experiment\n")
    with pytest.raises(FileNotFoundError, match=r"parent 'no_such_experiment' named by .*orphan.yaml"):
        experiment_config_files(orphan)
    with pytest.raises(FileNotFoundError, match="experiment 'no/such'"):
        experiment_config_files("no/such")
    suffixed = tmp_path / "suffixed.yaml"
    suffixed.write_text("parent: dti_sprites_tetrominoes.yaml\n")
    with pytest.raises(ValueError, match="names an experiment"):
        experiment_config_files(suffixed)


def test_cycle_is_a_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("objdecomp.cli.EXPERIMENTS", tmp_path)
    (tmp_path / "a.yaml").write_text("parent: b\n")
    (tmp_path / "b.yaml").write_text("parent: a\n")
    with pytest.raises(ValueError, match="cycle: a.yaml -> b.yaml -> a.yaml"):
        experiment_config_files("a")


def test_command_line_reads_each_ancestor_once():
    variant = "experiments/dti_sprites_tetrominoes_no_mask_noise.yaml"
    parent = str((EXPERIMENTS / "dti_sprites_tetrominoes.yaml").resolve())
    expanded = expand_config_arguments(["fit", "--config", str(BASE_CONFIG), f"--config={variant}",
                                        "--trainer.max_steps=2"])
    assert expanded == ["fit", "--config", str(BASE_CONFIG), "--config", parent,
                        "--config", variant, "--trainer.max_steps=2"]


def test_print_config_shows_the_resolved_variant(capsys, monkeypatch):
    """`objdecomp fit --config <variant>` alone gives the parent's values and the variant's own."""
    monkeypatch.chdir(EXPERIMENTS.parent)
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    with pytest.raises(SystemExit):
        ObjdecompCLI(args=["fit", "--config", "experiments/dti_sprites_tetrominoes_no_mask_noise.yaml",
                           "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["init_args"]["mask_noise"] == 0.0  # the variant
    assert resolved["model"]["init_args"]["num_sprites"] == 19  # the parent
    assert resolved["trainer"]["log_every_n_steps"] == 50  # _base/default.yaml
    assert resolved[PARENT_KEY] == "dti_sprites_tetrominoes"
