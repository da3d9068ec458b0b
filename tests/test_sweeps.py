"""Sweep files: the command names an experiment (the CLI reads its parents before it) and every
swept key is accepted by the CLI for that experiment."""

from pathlib import Path

import pytest
import yaml

from objdecomp.cli import ObjdecompCLI, is_experiment_file
from objdecomp.paths import EXPERIMENTS, REPO_ROOT

SWEEPS = sorted((EXPERIMENTS / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_arguments_parse(path: Path, capsys, monkeypatch):
    sweep = yaml.safe_load(path.read_text())
    command = sweep["command"]
    cli_args = command[command.index("fit"): command.index("${args}")]
    configs = [cli_args[i + 1] for i, arg in enumerate(cli_args) if arg == "--config"]
    assert any(is_experiment_file(REPO_ROOT / c) for c in configs), "a sweep tunes an experiment"
    # What the agent appends for one trial: the first value (or the minimum) of every parameter.
    trial = [f"--{key}={spec['values'][0] if 'values' in spec else spec['min']}"
             for key, spec in sweep["parameters"].items()]
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    with pytest.raises(SystemExit) as exit_info:
        ObjdecompCLI(args=[*cli_args, *trial, "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err[-2000:]
    resolved = yaml.safe_load(capsys.readouterr().out)
    for key in sweep["parameters"]:
        node = resolved
        for part in key.split("."):
            node = node[part]
        assert node is not None
