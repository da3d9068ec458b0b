"""Slow tier: 2 nodes x 1 process on localhost, launched as the README says (torchrun with c10d
rendezvous; SLURM's srun, whose environment is set here as srun sets it), give the test metrics of
one process, and a 2-node fit writes one run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch
import yaml

from tests.test_distributed_and_resume import ADVERSARIAL, REPO, check, objdecomp

pytestmark = pytest.mark.slow
NODES = ["--trainer.num_nodes=2", "--trainer.devices=1", "--trainer.strategy=ddp_find_unused_parameters_true"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(tmp: Path) -> Dict[str, str]:
    return {**os.environ, "OBJDECOMP_RESULTS": str(tmp / "results"), "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def run_nodes(commands: List[List[str]], envs: List[Dict[str, str]], timeout: int = 300) -> None:
    """Start one process per node at once, as a cluster would, and wait for all of them."""
    nodes = [subprocess.Popen(c, cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c, e in zip(commands, envs)]
    outputs = [node.communicate(timeout=timeout)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-4000:]


def torchrun(tmp: Path, *args: str) -> None:
    """``torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d ...`` on two 'nodes'."""
    port = free_port()
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
              "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=test{port}",
              "-m", "objdecomp", *args, *NODES]
    run_nodes([launch, launch], [environment(tmp)] * 2)


def srun(tmp: Path, *args: str) -> None:
    """``srun --nodes=2 --ntasks-per-node=1 python -m objdecomp ...``: the environment srun gives
    each task (Lightning's SLURMEnvironment reads it; the master address comes from the nodelist)."""
    port = free_port()
    command = [sys.executable, "-m", "objdecomp", *args, *NODES]
    envs = [{**environment(tmp), "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2",
             "SLURM_JOB_ID": f"9{port}", "SLURM_JOB_NAME": "objdecomp", "SLURM_NODELIST": "localhost",
             "SLURM_PROCID": str(rank), "SLURM_LOCALID": "0", "SLURM_NODEID": str(rank),
             "MASTER_PORT": str(port)} for rank in range(2)]
    run_nodes([command, command], envs)


def results_of(tmp: Path, experiment: str, world_size: int) -> Dict[str, float]:
    """The metrics of the one results file ``experiment``'s test wrote, checking it ran on
    ``world_size`` processes (two independent processes would write two files of world size 1)."""
    records = [json.loads(f.read_text()) for f in (tmp / "results" / experiment).glob("*.json")]
    assert [r["hardware"]["world_size"] for r in records] == [world_size]
    return records[0]["metrics"]


@pytest.mark.parametrize("launcher", [torchrun, srun], ids=["torchrun", "srun"])
def test_two_nodes_score_as_one_process_and_fit_one_run(tmp_path, launcher):
    config = tmp_path / "adv.yaml"
    config.write_text(yaml.safe_dump(ADVERSARIAL))
    launcher(tmp_path, "fit", "--config", str(config), "--experiment", "nodes")
    runs = list((tmp_path / "results" / "nodes").iterdir())
    assert len(runs) == 1, f"the two nodes made {len(runs)} run folders: {runs}"
    ckpt = runs[0] / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 8

    check(objdecomp(tmp_path, "test", "--config", str(config), "--experiment", "one",
                    f"--ckpt_path={ckpt}", "--trainer.devices=1"))
    launcher(tmp_path, "test", "--config", str(config), "--experiment", "two", f"--ckpt_path={ckpt}")
    one, two = results_of(tmp_path, "one", 1), results_of(tmp_path, "two", 2)
    assert one["test/images_seen"] == two["test/images_seen"] == 21  # every image once
    assert one.keys() == two.keys()
    for key, value in one.items():
        assert two[key] == pytest.approx(value, abs=1e-6), key
