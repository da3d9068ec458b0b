"""The newcomer's path (#15 items 10, 12, 13): the README's bare `objdecomp` commands work as
written after the set-up it shows, `make demo` trains a fixed number of steps, `make sweep`
fails at once and non-zero without a W&B server, `objdecomp data --list` shows every dataset."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

from objdecomp.data import listing
from objdecomp.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
ACTIVATE = "source .venv/bin/activate"


def readme_commands():
    """The lines of the README's bash blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_the_readme_puts_objdecomp_on_the_path_before_its_first_bare_use():
    commands = readme_commands()
    bare = [i for i, line in enumerate(commands) if line.startswith("objdecomp ")]
    activation = [i for i, line in enumerate(commands) if line.startswith(ACTIVATE)]
    install = [i for i, line in enumerate(commands) if line.startswith("make install")]
    assert bare and activation and activation[0] < bare[0], "the README uses objdecomp before activating .venv"
    assert install and install[0] < activation[0]


def test_activating_the_venv_gives_the_objdecomp_command():
    found = subprocess.run(["bash", "-c", f"{ACTIVATE} && command -v objdecomp"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=60)
    assert found.returncode == 0 and Path(found.stdout.strip()) == REPO_ROOT / ".venv" / "bin" / "objdecomp"


def test_make_install_says_how_to_activate():
    planned = subprocess.run(["make", "-n", "install"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=60).stdout
    assert ACTIVATE in planned


def test_make_demo_trains_a_fixed_number_of_steps_on_fixed_threads_then_tests_that_run():
    planned = subprocess.run(["make", "-n", "demo"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=60).stdout.replace("\\\n", " ")
    fit, test = [line for line in planned.splitlines() if " -m objdecomp " in line][:2]
    assert re.search(r"--trainer\.max_steps=\d+", fit) and "--trainer.max_time=null" in fit
    assert "OMP_NUM_THREADS=1" in fit and "OMP_NUM_THREADS=1" in test
    assert " test " in test and "--ckpt_path=last" in test and "--experiment demo" in test


def test_data_list_shows_the_generated_datasets():
    lines = listing()
    generated = {line.split()[0] for line in lines if len(line.split()) > 1 and line.split()[1] == "generated"}
    assert {"tetrominoes", "multi_dsprites", "textured_shape", "multi_texture"} <= generated


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_sweep(env) -> subprocess.CompletedProcess:
    sweep = sorted((REPO_ROOT / "experiments" / "sweeps").glob("*.yaml"))[0].stem
    return subprocess.run(["make", "--no-print-directory", "sweep", f"SWEEP={sweep}"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_make_sweep_without_a_reachable_wandb_server_stops_at_once_and_fails(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY="x" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
               HOME=str(tmp_path))
    started = time.monotonic()
    done = make_sweep(env)
    assert done.returncode != 0
    assert "W&B server" in done.stderr and "not reachable" in done.stderr
    assert time.monotonic() - started < 60

    env.pop("WANDB_API_KEY")  # and no ~/.netrc under this HOME
    done = make_sweep(env)
    assert done.returncode != 0 and "no W&B credentials" in done.stderr
