"""Sweep files: the command names an experiment (the CLI reads its parents before it) and every
swept key is accepted by the CLI for that experiment."""

from pathlib import Path

import pytest
import yaml

from objdecomp.cli import ObjdecompCLI, experiment_config_files, is_experiment_file
from objdecomp.paths import EXPERIMENTS, REPO_ROOT

SWEEPS = sorted((EXPERIMENTS / "sweeps").glob("*.yaml"))


def trials(parameters: dict) -> list:
    """Trials that together give every parameter each of its values (the bounds of a range):
    trial i takes each parameter's i-th value, or its last."""
    choices = {key: spec["values"] if "values" in spec else [spec["min"], spec["max"]]
               for key, spec in parameters.items()}
    return [{key: values[min(i, len(values) - 1)] for key, values in choices.items()}
            for i in range(max(map(len, choices.values())))]


def resolved_value(config: dict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_every_swept_value_is_accepted_with_its_type(path: Path, capsys, monkeypatch):
    sweep = yaml.safe_load(path.read_text())
    command = sweep["command"]
    cli_args = command[command.index("fit"): command.index("${args}")]
    configs = [cli_args[i + 1] for i, arg in enumerate(cli_args) if arg == "--config"]
    assert any(is_experiment_file(REPO_ROOT / c) for c in configs), "a sweep tunes an experiment"
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    for trial in trials(sweep["parameters"]):  # what the agent appends for one trial
        flags = [f"--{key}={value}" for key, value in trial.items()]
        with pytest.raises(SystemExit) as exit_info:
            ObjdecompCLI(args=[*cli_args, *flags, "--print_config"])
        assert exit_info.value.code in (0, None), f"{flags}: {capsys.readouterr().err[-2000:]}"
        resolved = yaml.safe_load(capsys.readouterr().out)
        for key, value in trial.items():
            # the value as given, of the parameter's type (a float range may take an int bound)
            assert resolved_value(resolved, key) == value, f"{key}={value!r} resolved differently"
            assert isinstance(resolved_value(resolved, key), type(value)) or isinstance(value, int), key


def swept_method(path: Path) -> str:
    """The method package (objdecomp/methods/<name>) of the experiment a sweep tunes."""
    command = yaml.safe_load(path.read_text())["command"]
    experiment = command[command.index("--config") + 1]
    models = [yaml.safe_load(f.read_text()).get("model", {}).get("class_path")
              for f in experiment_config_files(REPO_ROOT / experiment)]
    return [m for m in models if m][-1].split(".")[2]


def test_every_method_has_a_sweep():
    methods = {path.name for path in (REPO_ROOT / "objdecomp" / "methods").iterdir()
               if (path / "module.py").exists()}
    assert methods == {swept_method(path) for path in SWEEPS}
