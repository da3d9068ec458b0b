"""Which checkpoint a command means, and which model it rebuilds (the CLI's ``--ckpt_path``).

- ``last``: the newest run of the experiment and seed that has a checkpoint (:func:`newest_run`,
  from the runs' ``run.json``), and its ``last.ckpt``, or the newest readable checkpoint when
  that one is unreadable (:func:`intact_checkpoint`); each choice is said.
- a file: it must be a complete checkpoint (:func:`checkpoint_problem`).
- The model: the checkpoint's hyper-parameters, except those the command line's ``--model.*``
  flags set (:func:`model_from_checkpoint`); a checkpoint of another method is refused, by name.
  Lightning's own CLI lets the checkpoint override the flags and swap the model class silently.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
from jsonargparse import Namespace
from pytorch_lightning.utilities import rank_zero_info

from objdecomp.paths import results_root
from objdecomp.runs import RUN_DIR_ENV, RUN_FILE, RunInfo, plain_seed, read_run_record


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why ``path`` is no complete checkpoint file (torch's zip format), or None."""
    if not path.is_file():
        return "no such file"
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        return f"{path.stat().st_size} bytes: {error}"
    return f"damaged member {damaged}" if damaged else None


def newest_run(experiment: str, seed: Any) -> Optional[RunInfo]:
    """The most recently created run of ``experiment`` and ``seed`` that has a checkpoint."""
    seed = plain_seed(seed)
    candidates: List[Tuple[str, float, RunInfo]] = []
    for path in (results_root() / experiment).glob(f"*/{RUN_FILE}"):
        record = read_run_record(path.parent)
        saved = [p.stat().st_mtime for p in (path.parent / "checkpoints").glob("*.ckpt")]
        if record.get("seed") == seed and saved:  # runs started in the same second: the newer save
            candidates.append((record.get("created", ""), max(saved),
                               RunInfo.of_folder(path.parent, experiment, seed)))
    return max(candidates, key=lambda item: item[:2])[2] if candidates else None


def intact_checkpoint(run: RunInfo) -> Tuple[Optional[Path], List[str]]:
    """The run's checkpoint to resume from: ``last.ckpt`` when it is readable, else the newest
    readable one; and a line for each unreadable checkpoint passed over."""
    files = sorted((run.directory / "checkpoints").glob("*.ckpt"),
                   key=lambda p: (p.name != "last.ckpt", -p.stat().st_mtime))
    skipped = []
    for path in files:
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(f"{path} is unreadable ({problem}); passed over")
    return None, skipped


def resolve_last(subcommand: str, experiment: str, seed: Any) -> Optional[Path]:
    """The checkpoint ``--ckpt_path=last`` means; None (a new run) for a fit with nothing to
    resume; ``SystemExit`` for an evaluation with nothing to evaluate."""
    inherited = os.environ.get(RUN_DIR_ENV)  # a DDP rank: its launcher's run, new or resumed
    if inherited:
        run = RunInfo.of_folder(Path(inherited), experiment, seed)
        if not any((run.directory / "checkpoints").glob("*.ckpt")):
            return None
    else:
        run = newest_run(experiment, seed)
    if run is None:
        what = (f"no run of {experiment} with seed {plain_seed(seed)} has a checkpoint under "
                f"{results_root() / experiment}")
        if subcommand != "fit":
            raise SystemExit(f"error: --ckpt_path=last: {what}; train it first or pass --ckpt_path=<file>")
        rank_zero_info(f"--ckpt_path=last: {what}; starting a new run")
        return None
    path, skipped = intact_checkpoint(run)
    for line in skipped:
        rank_zero_info(f"--ckpt_path=last: {line}")
    if path is None:
        raise SystemExit(f"error: --ckpt_path=last: no readable checkpoint in {run.directory / 'checkpoints'}")
    revisions = [r["git_revision"][:7] for r in read_run_record(run.directory).get("revisions", [])]
    trained = ", ".join(dict.fromkeys(revisions)) or "an unknown revision"
    rank_zero_info(f"--ckpt_path=last: run {run.name} (trained at {trained}), checkpoint {path}")
    return path


@dataclass
class CheckpointModel:
    """The model config a checkpoint asks for: its class and the hyper-parameters to take."""

    class_path: str
    init_args: Dict[str, Any]


def model_from_checkpoint(path: Path, model_config: Optional[Namespace], command_line: Sequence[str],
                          linked: Sequence[str] = ()) -> Optional[CheckpointModel]:
    """What the checkpoint's hyper-parameters change in ``model_config``, without the ``linked``
    ones (dataset facts) and those the command line's ``--model.*`` flags set; prints which it
    takes and which flags overrule it. None for a checkpoint without hyper-parameters.

    Raises:
        SystemExit: the checkpoint holds a model of another class than the config builds.
    """
    hparams = dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                   .get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    saved_class = hparams.pop("_class_path", None)
    wanted_class = model_config.get("class_path") if isinstance(model_config, Namespace) else None
    if saved_class and wanted_class and saved_class != wanted_class:
        raise SystemExit(f"error: --ckpt_path={path} holds a {saved_class} model, but this command's config "
                         f"builds a {wanted_class}: pass a checkpoint of this experiment, or the --config "
                         "of the experiment that wrote it")
    if not hparams or not saved_class:
        return None
    flags = model_flag_keys(command_line)
    current = (model_config.get("init_args") if wanted_class else None) or Namespace()
    kept = {k: hparams.pop(k) for k in list(hparams) if k in linked or "*" in flags or k in flags}
    taken = sorted(k for k, v in hparams.items() if _plain(current.get(k)) != v)
    overruled = sorted(k for k, v in kept.items() if k in flags and _plain(current.get(k)) != v)
    if taken:
        rank_zero_info(f"--ckpt_path: hyper-parameters from the checkpoint: {', '.join(taken)}")
    if overruled:
        shown = ", ".join(f"{k}={_plain(current.get(k))!r} (checkpoint: {kept[k]!r})" for k in overruled)
        rank_zero_info(f"--ckpt_path: the command line's --model flags win: {shown}")
    return CheckpointModel(saved_class, hparams)


def model_flag_keys(command_line: Sequence[str]) -> Set[str]:
    """The model arguments the command line sets (``--model.init_args.lr=…`` and
    ``--model.lr …`` both give ``lr``); ``*`` when it sets the whole model."""
    keys = set()
    for arg in command_line:
        if arg.startswith(("--model=", "--model.class_path")) or arg == "--model":
            keys.add("*")
        elif arg.startswith("--model."):
            key = arg[len("--model."):].split("=", 1)[0]
            key = key[len("init_args."):] if key.startswith("init_args.") else key
            keys.add(key.split(".", 1)[0])
    return keys


def _plain(value: Any) -> Any:
    """A parsed config value as the plain data a checkpoint's hyper-parameters hold."""
    if isinstance(value, Namespace):
        return {k: _plain(v) for k, v in value.as_dict().items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
