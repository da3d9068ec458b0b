"""Sweep files: every swept key is accepted by the CLI for the sweep's experiment."""

from pathlib import Path

import pytest
import yaml

from objdecomp.cli import ObjdecompCLI
from objdecomp.paths import EXPERIMENTS, REPO_ROOT

SWEEPS = sorted((EXPERIMENTS / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_arguments_parse(path: Path, capsys, monkeypatch):
    sweep = yaml.safe_load(path.read_text())
    command = sweep["command"]
    cli_args = command[command.index("fit"): command.index("${args}")]
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
