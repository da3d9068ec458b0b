"""Run identity and bookkeeping: names, folders, git revisions, hardware, W&B logger.

Every fit is a run of its own: ``<experiment>-<seed>-<UTC time>-<4 hex>`` in
``$OBJDECOMP_RESULTS/<experiment>/<run>/``, with its own W&B id, so that a rerun, two sweep
trials or two concurrent fits never share checkpoints, pictures or a W&B run. ``run.json`` in
the folder says which experiment and seed the run trains and every git revision that trained it
(a resume after a new commit adds one); ``--ckpt_path=last`` reads it to find the newest run of
an experiment and seed (objdecomp/checkpoints.py).
"""

from __future__ import annotations

import json
import netrc
import os
import platform
import re
import secrets
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info

from objdecomp.paths import EXPERIMENTS, REPO_ROOT, results_root, write_atomically

WANDB_PROJECT = os.environ.get("WANDB_PROJECT", "objdecomp")
WANDB_DEFAULT_URL = "https://api.wandb.ai"
WANDB_PROBE_SECONDS = 3.0
RUN_FILE = "run.json"
# The run folder of the command in progress: the ranks a DDP launcher starts inherit it, so that
# every process of one fit writes into one run.
RUN_DIR_ENV = "OBJDECOMP_RUN_DIR"
# A run id that all processes of one job share when an outside launcher (torchrun, srun)
# starts them; torchrun's rendezvous id or SLURM's job id are taken when it is not set.
RUN_ID_ENV = "OBJDECOMP_RUN_ID"


@dataclass(frozen=True)
class RunInfo:
    """One run: its experiment, seed, folder and W&B id."""

    experiment: str
    seed: Optional[int]
    directory: Path
    run_id: str  # the W&B id

    @classmethod
    def new(cls, experiment: str, seed: Any) -> "RunInfo":
        """A new run of ``experiment`` (or, in a rank a DDP launcher started, its parent's run)."""
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited:
            return cls.of_folder(Path(inherited), experiment, seed)
        seed = plain_seed(seed)
        sweep_trial = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
        run_id = sweep_trial or shared_run_id() or unique_run_id()
        name = f"{experiment.replace('/', '-')}-{'noseed' if seed is None else seed}-{run_id}"
        return cls(experiment, seed, results_root() / experiment / name, run_id)

    @classmethod
    def of_folder(cls, folder: Path, experiment: str, seed: Any) -> "RunInfo":
        """The run that lives in ``folder``, for a command on ``experiment`` and ``seed`` (which
        name its results, e.g. a checkpoint tested under another experiment's name)."""
        run_id = read_run_record(folder).get("run_id") or re.sub(r"[^A-Za-z0-9_-]", "-", folder.name)
        return cls(experiment, plain_seed(seed), folder, run_id)

    @classmethod
    def of_checkpoint(cls, checkpoint: Path, experiment: str, seed: Any) -> "RunInfo":
        """The run a checkpoint at ``<run>/checkpoints/<file>`` belongs to, else a new run."""
        if checkpoint.parent.name == "checkpoints":
            return cls.of_folder(checkpoint.parent.parent, experiment, seed)
        return cls.new(experiment, seed)

    @property
    def name(self) -> str:
        return self.directory.name


def plain_seed(seed: Any) -> Optional[int]:
    """The seed as an int, None for a random one (``seed_everything: true``)."""
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def unique_run_id() -> str:
    """``<UTC time>-<4 hex>``: sortable by start time, distinct for concurrent starts."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def shared_run_id() -> Optional[str]:
    """The id every process of a multi-process job agrees on, when an outside launcher started
    them; an error when there are several processes and nothing they share names the run."""
    if os.environ.get(RUN_ID_ENV):
        return re.sub(r"[^A-Za-z0-9_-]", "-", os.environ[RUN_ID_ENV])
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    for variable in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        value = os.environ.get(variable, "none")
        if value != "none":
            return re.sub(r"[^A-Za-z0-9_-]", "-", value)
    raise RuntimeError(f"{os.environ['WORLD_SIZE']} processes and no run id they share: set "
                       f"{RUN_ID_ENV} to the same value in every process (torchrun --rdzv-id or "
                       "SLURM set one)")


# --- run.json: experiment, seed and the revisions that trained the run ----------------------
def read_run_record(folder: Path) -> Dict[str, Any]:
    try:
        return json.loads((folder / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def record_training_start(run: RunInfo, from_step: int) -> List[Dict[str, Any]]:
    """Add this revision to the run's ``run.json`` (a fit starting or resuming at ``from_step``)
    and return every revision that trained the run, oldest first."""
    record = read_run_record(run.directory) or {
        "experiment": run.experiment, "seed": run.seed, "run_id": run.run_id,
        "created": _now(), "revisions": []}
    record["revisions"].append({"git_revision": git_revision(), "started": _now(), "from_step": from_step})
    run.directory.mkdir(parents=True, exist_ok=True)
    write_atomically(run.directory / RUN_FILE, json.dumps(record, indent=2) + "\n")
    return record["revisions"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- names, revisions, hardware --------------------------------------------------------------
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


# --- W&B -------------------------------------------------------------------------------------
def wandb_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or WANDB_DEFAULT_URL


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (``WANDB_API_KEY`` or a netrc entry from ``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(urlparse(wandb_url()).hostname) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_server_problem(timeout: float = WANDB_PROBE_SECONDS) -> Optional[str]:
    """Why the W&B server (or the proxy in the way) cannot be reached, or None: a TCP connection
    that fails within ``timeout`` seconds, instead of wandb's own minutes of retries."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("HTTP_PROXY")
    url = urlparse(proxy or wandb_url())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as error:
        return f"cannot reach {url.hostname}:{port} ({error.strerror or error})"
    return None


def wandb_mode() -> Tuple[str, str]:
    """The W&B mode and why: ``WANDB_MODE`` when set; online when logged in and the server
    answers; offline otherwise (never a prompt, never minutes of waiting)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], "WANDB_MODE is set"
    if not wandb_logged_in():
        return "offline", "not logged in"
    problem = wandb_server_problem()
    if problem:
        return "offline", f"logged in, but {problem}; sync later with `wandb sync`"
    return "online", "logged in"


def wandb_sweep_problem() -> Optional[str]:
    """Why a W&B sweep cannot start from here (``make sweep`` checks first), or None."""
    if not wandb_logged_in():
        return "make sweep: no W&B credentials; run `wandb login` or set WANDB_API_KEY (a sweep needs a W&B server)"
    problem = wandb_server_problem()
    if problem:
        return (f"make sweep: the W&B server ({wandb_url()}) is not reachable: {problem}; a sweep needs "
                "it (set WANDB_BASE_URL for a self-hosted server)")
    return None


def make_logger(run: RunInfo) -> WandbLogger:
    """The default logger: W&B, online or offline as :func:`wandb_mode` decides, one notice line
    (wandb's own console lines are silenced)."""
    import wandb

    if wandb.run is not None:  # an earlier command in this process (tests, notebooks): its run is over
        wandb.finish()
    mode, why = wandb_mode()
    rank_zero_info(f"W&B: {mode} ({why}); run '{run.name}' in {run.directory}; "
                   "disable with --trainer.logger=false")
    run.directory.mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(name=run.name, id=run.run_id, resume="allow", project=WANDB_PROJECT,
                         save_dir=str(run.directory), offline=mode != "online",
                         group=run.experiment, log_model=False,
                         settings=wandb.Settings(silent=True, init_timeout=30))
    # Lightning always passes `anonymous`, which this wandb no longer takes and warns about.
    logger._wandb_init.pop("anonymous", None)
    return logger
