"""Two CPU processes (gloo) with uneven shards give the single-process metric values."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests import ddp_metrics_worker as worker

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_metrics_equal_single_process(tmp_path):
    out = tmp_path / "ddp.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    # A script under torch.distributed.run, as real multi-process runs start (not mp.spawn).
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", str(REPO / "tests" / "ddp_metrics_worker.py"),
               str(out)]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ddp = json.loads(out.read_text())

    assert sorted(ddp["shard_sizes"]) == [6, 7]  # uneven shards
    single = worker.evaluate(range(worker.NUM_IMAGES))
    counted = {name: worker.images_counted(metric) for name, metric in single.items()}
    assert ddp["images"] == counted  # summed states equal one process's: each image once
    assert all(n == worker.NUM_IMAGES for name, n in counted.items() if name != "fg_global")
    expected = worker.values(single)
    assert ddp["values"].keys() == expected.keys()
    assert ddp["values"]["ari_fg/n_undefined"] == 1.0  # the image without foreground
    for key, value in expected.items():
        assert not math.isnan(value), key
        assert ddp["values"][key] == pytest.approx(value, rel=0, abs=1e-12), key
