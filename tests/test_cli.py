"""The whole path through the CLI, in process: fit -> checkpoint -> test -> results JSON ->
PNG grid -> W&B offline run folder; config errors; the non-finite guard; runs of their own,
checkpoints that resume, evaluate or warm-start as asked (#15 items 1, 3-6, 11, 12)."""

import json
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from objdecomp import runs
from objdecomp.__main__ import main
from objdecomp.cli import ObjdecompCLI
from objdecomp.runs import RunInfo
from objdecomp.training.nonfinite import NonFiniteLossError

REPO = Path(__file__).resolve().parent.parent

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
    run = RunInfo.of_checkpoint(checkpoint, "tiny", 0)
    assert run.name == "tiny-0-0123abc" and run.directory == checkpoint.parent.parent
    fresh = RunInfo.new("tiny", 0)
    assert fresh.directory == tmp_path / "tiny" / fresh.name and fresh.name != run.name


# --- a run never loses work (#15 items 1, 3) ------------------------------------------------------
def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def test_every_fit_ends_with_a_checkpoint_of_its_last_step(workspace):
    _, config = workspace
    off_interval = run_cli("fit", "--config", str(config), "--experiment", "tiny",
                           "--trainer.max_steps=7", "--trainer.logger=false")  # interval 3
    assert checkpoint_step(off_interval.trainer.checkpoint_callback.last_model_path) == 7
    timed = run_cli("fit", "--config", str(config), "--experiment", "timed", "--trainer.logger=false",
                    "--trainer.max_steps=-1", "--trainer.max_epochs=-1", "--trainer.max_time=00:00:00:02",
                    "--model.init_args.seconds_per_step=0.2", "--checkpoint.every_n_train_steps=1000")
    stopped_at = timed.trainer.global_step
    assert 0 < stopped_at < 1000
    assert checkpoint_step(timed.trainer.checkpoint_callback.last_model_path) == stopped_at


def test_checkpoints_are_written_beside_their_target_and_renamed(tmp_path, monkeypatch):
    """Not through $TMPDIR: a move from another filesystem is a copy that a kill truncates."""
    from objdecomp.callbacks.checkpoints import AtomicCheckpointIO

    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))
    renames = []
    real_replace = os.replace

    def replace(source, target):
        renames.append((Path(source), Path(target)))
        real_replace(source, target)

    monkeypatch.setattr("objdecomp.callbacks.checkpoints.os.replace", replace)
    target = tmp_path / "run" / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, target)
    [(source, renamed)] = renames
    assert renamed == target and source.parent == target.parent and not source.exists()
    assert torch.load(target, weights_only=True) == {"global_step": 3}


def test_resuming_from_an_unreadable_last_checkpoint_takes_the_newest_intact_one(workspace, caplog):
    _, config = workspace
    first = run_cli("fit", "--config", str(config), "--experiment", "tiny", "--trainer.logger=false")
    folder = Path(first.trainer.checkpoint_callback.dirpath)
    (folder / "last.ckpt").write_bytes(b"")  # what kill -9 left before atomic writes
    resumed = run_cli("fit", "--config", str(config), "--experiment", "tiny", "--trainer.logger=false",
                      "--ckpt_path=last", "--trainer.max_steps=9")
    assert f"{folder / 'last.ckpt'} is unreadable (0 bytes" in caplog.text
    assert Path(resumed.trainer.ckpt_path) == folder / "epoch=0-step=6.ckpt"
    assert checkpoint_step(folder / "last.ckpt") == 9


# --- every fit is a run of its own (#15 item 4) --------------------------------------------------
def test_each_fit_is_its_own_run_and_last_resumes_the_newest_across_commits(workspace, monkeypatch, caplog):
    tmp, config = workspace
    fit = ("fit", "--config", str(config), "--experiment", "tiny")
    one, two = run_cli(*fit), run_cli(*fit)
    assert one.run.directory != two.run.directory and one.run.run_id != two.run.run_id
    for cli in (one, two):
        assert (cli.run.directory / "checkpoints" / "last.ckpt").is_file()
        assert [p.name for p in (cli.run.directory / "wandb").glob("offline-run-*")][0].endswith(cli.run.run_id)

    monkeypatch.setattr(runs, "git_revision", lambda short=False: "f" * 40)  # a new commit
    resumed = run_cli(*fit, "--ckpt_path=last", "--trainer.max_steps=9")
    assert resumed.run.directory == two.run.directory  # the newest run of tiny, seed 0
    assert f"--ckpt_path=last: run {two.run.name}" in caplog.text
    assert checkpoint_step(two.run.directory / "checkpoints" / "last.ckpt") == 9
    record = json.loads((two.run.directory / "run.json").read_text())
    assert [r["from_step"] for r in record["revisions"]] == [0, 6]
    assert record["revisions"][-1]["git_revision"] == "f" * 40 != record["revisions"][0]["git_revision"]

    other_seed = run_cli(*fit, "--seed_everything=1", "--ckpt_path=last", "--trainer.logger=false")
    assert other_seed.trainer.ckpt_path is None and other_seed.run.directory not in (
        one.run.directory, two.run.directory)  # no run of seed 1: a new one


def test_a_run_in_a_folder_of_the_callers_choice_keeps_everything_there(workspace, tmp_path):
    tmp, config = workspace
    folder = tmp_path / "bench"
    cli = run_cli("fit", "--config", str(config), "--experiment", "tiny", f"--trainer.default_root_dir={folder}")
    assert cli.run.directory == folder and (folder / "run.json").is_file()
    assert (folder / "checkpoints" / "last.ckpt").is_file() and list((folder / "wandb").glob("offline-run-*"))
    assert not (tmp / "results").exists()


# --- a command never gives a silently wrong number (#15 items 5, 6) -------------------------------
def test_evaluating_last_without_a_run_is_an_error_and_writes_nothing(workspace):
    tmp, config = workspace
    with pytest.raises(SystemExit, match="no run of tiny with seed 0 has a checkpoint"):
        run_cli("test", "--config", str(config), "--experiment", "tiny", "--ckpt_path=last")
    assert not list((tmp / "results").rglob("*.json"))


def test_command_line_model_flags_win_over_the_checkpoint(workspace, caplog):
    _, config = workspace
    trained = run_cli("fit", "--config", str(config), "--experiment", "tiny", "--trainer.logger=false",
                      "--model.init_args.lr=0.05", "--model.init_args.hidden=6")
    ckpt = trained.trainer.checkpoint_callback.last_model_path
    tested = run_cli("test", "--config", str(config), "--experiment", "tiny", "--trainer.logger=false",
                     f"--ckpt_path={ckpt}", "--model.init_args.lr=0.003")
    assert tested.model.hparams.lr == 0.003  # the flag
    assert tested.model.hparams.hidden == 6  # the checkpoint's, not the config's 8
    shown = caplog.text
    assert "hyper-parameters from the checkpoint: hidden" in shown
    assert "--model flags win: lr=0.003 (checkpoint: 0.05)" in shown


def test_a_checkpoint_of_another_method_is_named(workspace, tmp_path):
    _, config = workspace
    foreign = tmp_path / "redo.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {
        "_class_path": "objdecomp.methods.redo.ReDO", "z_dim": 32}}, foreign)
    with pytest.raises(SystemExit, match=r"holds a objdecomp\.methods\.redo\.ReDO model, but this "
                                         r"command's config builds a tests\.tiny\.TinyMethod"):
        run_cli("test", "--config", str(config), "--experiment", "tiny", f"--ckpt_path={foreign}")


def test_init_checkpoint_loading_nothing_is_an_error_and_a_partial_load_is_printed(workspace, tmp_path, caplog):
    _, config = workspace
    fit = ("fit", "--config", str(config), "--experiment", "tiny", "--trainer.logger=false",
           "--trainer.max_steps=1")
    nothing = tmp_path / "nothing.ckpt"
    torch.save({"state_dict": {"generator.weight": torch.zeros(2)}}, nothing)
    with pytest.raises(ValueError, match="none of its 1 weights matches"):
        run_cli(*fit, f"--model.init_args.init_checkpoint={nothing}")
    partial = tmp_path / "partial.ckpt"
    weights = run_cli(*fit).model.state_dict()
    torch.save({"state_dict": {"net.0.weight": weights["net.0.weight"], "extra.bias": torch.zeros(1)}}, partial)
    run_cli(*fit, f"--model.init_args.init_checkpoint={partial}")
    shown = caplog.text
    assert f"init_checkpoint {partial}: 1 of this model's" in shown
    assert "net.0.bias" in shown and "in the checkpoint only: extra.bias" in shown


# --- failing clearly (#15 items 11, 12) -------------------------------------------------------------
def test_an_unknown_or_abbreviated_key_is_named_first_without_the_usage(workspace, capsys):
    _, config = workspace
    for flag, named in (("--model.init_args.not_a_key=3", "error: unknown key model.init_args.not_a_key"),
                        ("--trainer.max_step=20", "error: unknown option --trainer.max_step=20")):
        with pytest.raises(SystemExit) as stopped:
            run_cli("fit", "--config", str(config), flag)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and err.startswith(named), err
        assert len(err.splitlines()) < 15 and "usage:" not in err


def test_a_missing_dataset_is_its_message_alone_before_any_run_is_made(workspace, tmp_path, monkeypatch):
    tmp, config = workspace
    monkeypatch.setenv("OBJDECOMP_DATA", str(tmp_path / "no-data"))
    with pytest.raises(SystemExit) as stopped:
        run_cli("fit", "--config", str(config), "--experiment", "flowers",
                "--data=datamodules.flowers.FlowersDataModule")
    message = str(stopped.value.code)
    assert message.startswith("error: dataset 'flowers' not found") and "objdecomp data flowers" in message
    assert not (tmp / "results").exists()  # no run folder, hence no W&B run


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_wandb_without_a_reachable_server_is_offline_within_seconds_with_one_line(workspace, monkeypatch):
    """Logged in, no network: was 110 s of retries per command, then a crash."""
    tmp, config = workspace
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_SILENT")
    started = time.monotonic()
    assert runs.wandb_mode()[0] == "offline"
    assert time.monotonic() - started < runs.WANDB_PROBE_SECONDS + 1
    done = subprocess.run([sys.executable, "-m", "objdecomp", "fit", "--config", str(config),
                           "--experiment", "tiny", "--trainer.max_steps=2"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, done.stderr[-2000:]
    notices = [line for line in lines if line.startswith("W&B: ")]
    assert len(notices) == 1 and notices[0].startswith("W&B: offline (logged in, but cannot reach 127.0.0.1")
    assert not [line for line in lines if "wandb:" in line.lower()], lines
    assert list((tmp / "results" / "tiny").glob("*/wandb/offline-run-*"))


def test_a_run_ending_at_max_steps_shows_one_bar_for_the_whole_run(workspace):
    _, config = workspace
    cli = run_cli("fit", "--config", str(config), "--experiment", "tiny", "--trainer.logger=false",
                  "--trainer.enable_progress_bar=true", "--trainer.max_steps=11")  # 8 batches an epoch
    bar = cli.trainer.progress_bar_callback.train_progress_bar
    assert (bar.n, bar.total) == (11, 11)
