"""The whole path through the CLI, in process: fit -> checkpoint -> test -> results JSON ->
PNG grid -> W&B offline run folder; config errors; the non-finite guard."""

import json
import warnings
from pathlib import Path

import pytest
import yaml

from objdecomp.__main__ import main
from objdecomp.cli import ObjdecompCLI
from objdecomp.training.nonfinite import NonFiniteLossError
from objdecomp.runs import RunInfo

TINY = {
    "model": {"class_path": "tests.tiny.TinyMethod"},
    "data": {"class_path": "tests.tiny.TinySquaresDataModule"},
    "trainer": {"max_steps": 6, "enable_progress_bar": False, "val_check_interval": 3,
                "log_every_n_steps": 1},
    "checkpoint": {"every_n_train_steps": 3},
    "pictures": {"every_n_steps": 3, "num_images": 4},
}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("OBJDECOMP_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr("sys.argv", ["objdecomp"])  # LightningCLI reads sys.argv when warning
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    return tmp_path, config


def run_cli(*args):
    return ObjdecompCLI(args=list(args))


def test_fit_then_test_writes_everything(workspace):
    tmp, config = workspace
    cli = run_cli("fit", "--config", str(config), "--experiment", "tiny")
    assert cli.model.image_size == 16 and cli.model.max_objects == 3  # facts linked from data
    run_dir = tmp / "results" / "tiny" / cli.run.name
    assert cli.run.name.startswith("tiny-0-")
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "pictures" / "step0000003.png").is_file()
    assert (run_dir / "pictures" / "step0000006.png").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*")), "W&B offline run folder missing"
    assert "val/ari" in cli.trainer.callback_metrics

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    run_cli("test", "--config", str(config), "--experiment", "tiny", f"--ckpt_path={ckpt}")
    record = json.loads((tmp / "results" / "tiny" / f"{cli.run.name}.json").read_text())
    assert record["global_step"] == 6 and record["batch_step"] == 6
    assert 0.0 <= record["metrics"]["test/ari_fg"] <= 1.0
    assert record["config"]["model"]["class_path"] == "tests.tiny.TinyMethod"
    assert record["seed"] == 0 and record["git_revision"]
    assert (run_dir / "pictures" / "test.png").is_file()

    run_cli("test", "--config", str(config), "--experiment", "tiny", f"--ckpt_path={ckpt}",
            "--eval_split", "train")  # Table 1-style train columns, in their own file
    on_train = json.loads((tmp / "results" / "tiny" / f"{cli.run.name}.train.json").read_text())
    assert on_train["split"] == "train" and "train/ari_fg" in on_train["metrics"]
    assert not any(key.startswith("test/") for key in on_train["metrics"])
    assert (run_dir / "pictures" / "train.png").is_file()


def test_unknown_key_is_rejected_with_its_name(workspace, capsys):
    _, config = workspace
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", str(config), "--model.init_args.not_a_key=3")
    assert "not_a_key" in capsys.readouterr().err


def test_print_config_shows_resolved_config(workspace, capsys):
    _, config = workspace
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["use_distributed_sampler"] is False
    assert printed["model"]["class_path"] == "tests.tiny.TinyMethod"


def test_console_command_reads_argv_without_lightning_warning(workspace, monkeypatch, capsys):
    _, config = workspace
    monkeypatch.setattr("sys.argv", ["objdecomp", "fit", "--config", str(config), "--print_config"])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit):
        warnings.simplefilter("always")
        main()  # as the console script calls it
    assert yaml.safe_load(capsys.readouterr().out)["model"]["class_path"] == "tests.tiny.TinyMethod"
    assert not [w for w in caught if "args parameter" in str(w.message)]


def test_nonfinite_loss_stops_with_step_and_term(workspace):
    tmp, config = workspace
    with pytest.raises(NonFiniteLossError, match=r"'recon' is nan at global step 2"):
        run_cli("fit", "--config", str(config), "--experiment", "nan",
                "--model.init_args.nan_at_step=2", "--trainer.logger=false")
    dumps = list((tmp / "results" / "nan").glob("*/checkpoints/nonfinite-step2.*"))
    assert sorted(p.suffix for p in dumps) == [".ckpt", ".pt"]


def test_a_checkpoint_names_its_run_across_commits(tmp_path, monkeypatch):
    """Testing (or resuming) after a new commit writes into the checkpoint's run folder."""
    monkeypatch.setenv("OBJDECOMP_RESULTS", str(tmp_path))
    checkpoint = tmp_path / "tiny" / "tiny-0-0123abc" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    run = RunInfo.create("tiny", 0, ckpt_path=str(checkpoint))
    assert run.name == "tiny-0-0123abc" and run.directory == checkpoint.parent.parent
    fresh = RunInfo.create("tiny", 0, ckpt_path="last")
    assert fresh.directory == tmp_path / "tiny" / fresh.name and fresh.name != run.name
