"""Slow tier: 2-process CPU DDP through the CLI, and a killed run resumed from last.ckpt.

Both run the real command (``python -m objdecomp``) in subprocesses: the DDP launcher
re-executes the command line for rank 1, which must not be pytest's.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

ADVERSARIAL = {
    "model": {"class_path": "tests.tiny.TinyMethod", "init_args": {"adversarial": True}},
    "data": {"class_path": "tests.tiny.TinySquaresDataModule",
             "init_args": {"test_size": 21, "eval_batch_size": 4}},
    "trainer": {"max_steps": 8, "enable_progress_bar": False, "logger": False,
                "accelerator": "cpu"},
    "checkpoint": {"every_n_train_steps": 4},
    "pictures": {"every_n_steps": 0},
}


def objdecomp(tmp: Path, *args: str, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "OBJDECOMP_RESULTS": str(tmp / "results"), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "objdecomp", *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **popen)


def check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_ddp_two_processes_match_single_process(tmp_path):
    config = tmp_path / "adv.yaml"
    config.write_text(yaml.safe_dump(ADVERSARIAL))
    ddp = ["--trainer.devices=2", "--trainer.strategy=ddp_find_unused_parameters_true"]
    check(objdecomp(tmp_path, "fit", "--config", str(config), "--experiment", "adv", *ddp))
    ckpt = next((tmp_path / "results" / "adv").glob("*/checkpoints/last.ckpt"))
    # Two optimizers step per batch, so 8 optimizer steps are 4 batches.
    assert torch.load(ckpt, weights_only=False)["global_step"] == 8

    metrics = {}
    for devices in (1, 2):
        out = tmp_path / f"results-{devices}"
        extra = ddp if devices == 2 else ["--trainer.devices=1"]
        check(objdecomp(tmp_path, "test", "--config", str(config), "--experiment", f"d{devices}",
                        f"--ckpt_path={ckpt}", *extra))
        record = next((tmp_path / "results" / f"d{devices}").glob("*.json"))
        metrics[devices] = json.loads(record.read_text())["metrics"]
    assert metrics[1]["test/images_seen"] == metrics[2]["test/images_seen"] == 21  # no duplicates
    assert metrics[1].keys() == metrics[2].keys()
    for key, value in metrics[1].items():
        assert metrics[2][key] == pytest.approx(value, abs=1e-6), key


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    config = tmp_path / "slow.yaml"
    slow = {**ADVERSARIAL, "model": {"class_path": "tests.tiny.TinyMethod",
                                     "init_args": {"seconds_per_step": 0.3}}}
    slow["trainer"] = {**ADVERSARIAL["trainer"], "max_steps": 60}
    slow["checkpoint"] = {"every_n_train_steps": 5}
    config.write_text(yaml.safe_dump(slow))
    args = ["fit", "--config", str(config), "--experiment", "resume"]
    env = {**os.environ, "OBJDECOMP_RESULTS": str(tmp_path / "results"), "WANDB_MODE": "disabled"}
    first = subprocess.Popen([sys.executable, "-m", "objdecomp", *args], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = _wait_for_checkpoint_step(tmp_path / "results" / "resume", at_least=10, timeout=240)
    first.kill()
    first.wait()
    saved = _checkpoint_step(next((tmp_path / "results" / "resume").glob("*/checkpoints/last.ckpt")))
    assert 10 <= saved < 60, "the first run was not killed mid-way"

    output = check(objdecomp(tmp_path, *args, "--ckpt_path=last",
                             "--model.init_args.seconds_per_step=0"))
    assert f"at global step {saved} " in output
    final = next((tmp_path / "results" / "resume").glob("*/checkpoints/last.ckpt"))
    assert _checkpoint_step(final) == 60


def _checkpoint_step(path: Path) -> int:
    return torch.load(path, weights_only=False, map_location="cpu")["global_step"]


def _wait_for_checkpoint_step(folder: Path, at_least: int, timeout: float) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for ckpt in folder.glob("*/checkpoints/last.ckpt"):
            try:
                step = _checkpoint_step(ckpt)
            except Exception:  # being written right now
                continue
            if step >= at_least:
                return step
        time.sleep(0.5)
    raise TimeoutError(f"no checkpoint at step >= {at_least} in {folder}")
