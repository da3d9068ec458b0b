"""Run identity and bookkeeping: names, folders, git revision, hardware, W&B logger."""

from __future__ import annotations

import logging
import netrc
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence
from urllib.parse import urlparse

import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from objdecomp.paths import EXPERIMENTS, REPO_ROOT, results_root

log = logging.getLogger(__name__)
WANDB_PROJECT = os.environ.get("WANDB_PROJECT", "objdecomp")


@dataclass(frozen=True)
class RunInfo:
    """Who a run is: ``<experiment>-<seed>-<short git sha>`` under the results root."""

    experiment: str
    seed: Optional[int]
    git_sha: str
    sweep_run_id: Optional[str] = None  # set by a W&B sweep agent: one folder per trial
    folder: Optional[Path] = None  # an existing run's folder, when a checkpoint names it

    @classmethod
    def create(cls, experiment: str, seed, ckpt_path: Optional[str] = None) -> "RunInfo":
        """A new run, or the run a checkpoint at ``<run>/checkpoints/<file>.ckpt`` belongs to,
        so that testing or resuming it after a new commit writes into the same folder."""
        seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
        sweep_run = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
        checkpoint = Path(ckpt_path) if ckpt_path else None
        folder = (checkpoint.parent.parent if checkpoint and checkpoint.is_file()
                  and checkpoint.parent.name == "checkpoints" else None)
        return cls(experiment, seed, git_revision(short=True), sweep_run, folder)

    @property
    def name(self) -> str:
        if self.folder is not None:
            return self.folder.name
        seed = "noseed" if self.seed is None else str(self.seed)
        name = f"{self.experiment.replace('/', '-')}-{seed}-{self.git_sha}"
        return f"{name}-{self.sweep_run_id}" if self.sweep_run_id else name

    @property
    def directory(self) -> Path:
        return self.folder if self.folder is not None else results_root() / self.experiment / self.name


def experiment_name_from_configs(config_paths: Sequence) -> str:
    """The last non-base config's path under ``experiments/`` without suffix, e.g.
    ``quick/dti_sprites_tetrominoes``; ``unnamed`` when no experiment file was given."""
    for item in reversed(list(config_paths)):
        path = Path(str(getattr(item, "absolute", item))).resolve()
        if "_base" in path.parts or "sweeps" in path.parts:
            continue
        try:
            return path.relative_to(EXPERIMENTS.resolve()).with_suffix("").as_posix()
        except ValueError:
            return path.stem
    return "unnamed"


def git_revision(short: bool = False) -> str:
    """The repository's commit (``-dirty`` appended when the tree has changes), or ``nogit``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "nogit"
    return sha[:7] if short else sha + ("-dirty" if _git_dirty() else "")


def _git_dirty() -> bool:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.strip())


def hardware() -> Dict[str, object]:
    """What the run ran on, for the results file."""
    info: Dict[str, object] = {
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 convolutions and matmuls in hardware (AVX-512 BF16, AMX).

    Without it PyTorch emulates them, several times slower than float32 (10x for ReDO here).
    """
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (``WANDB_API_KEY`` or a netrc entry from ``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; else online when logged in, offline otherwise (never a prompt)."""
    return os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")


def make_logger(run: RunInfo) -> WandbLogger:
    """The default logger: W&B, online or offline as :func:`wandb_mode` decides, one notice line."""
    mode = wandb_mode()
    rank_zero_info(f"W&B: {mode} ({'logged in' if mode == 'online' else 'not logged in or WANDB_MODE set'}); "
                   f"run '{run.name}' in {run.directory}; disable with --trainer.logger=false")
    run.directory.mkdir(parents=True, exist_ok=True)
    # A deterministic id makes a resumed run continue the same W&B run; under a sweep
    # agent the agent's own run id is kept.
    run_id = run.sweep_run_id or re.sub(r"[^A-Za-z0-9_-]", "-", run.name)
    return WandbLogger(name=run.name, id=run_id, resume="allow", project=WANDB_PROJECT,
                       save_dir=str(run.directory), offline=mode != "online",
                       group=run.experiment, log_model=False)
