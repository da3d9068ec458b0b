"""Every experiment file parses: class paths resolve and no key is unknown."""

from pathlib import Path

import pytest
import yaml

from objdecomp.cli import ObjdecompCLI
from objdecomp.paths import EXPERIMENTS

BASE = EXPERIMENTS / "_base" / "default.yaml"
FILES = sorted(p for p in EXPERIMENTS.rglob("*.yaml")
               if p.parent.name not in ("_base", "sweeps") and p.name != "paper_tables.yaml")


def test_there_are_experiments():
    assert FILES, "no experiment files found"


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(EXPERIMENTS).as_posix() for p in FILES])
def test_experiment_config_parses(path: Path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    with pytest.raises(SystemExit) as exit_info:
        ObjdecompCLI(args=["fit", "--config", str(BASE), "--config", str(path), "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err[-2000:]
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"] and resolved["data"]["class_path"]
    for fact in ("image_size", "channels", "max_objects", "num_classes", "num_background"):
        assert fact not in (resolved["model"].get("init_args") or {}), f"{fact} is linked, not configured"
