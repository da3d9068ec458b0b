"""The ``objdecomp`` command: LightningCLI subcommands plus the suite's own tools.

``objdecomp fit|validate|test|predict --config experiments/<name>.yaml [--key=value …]``
trains or evaluates any method on any datamodule (subclass mode; ordered ``--config``
files, the last wins; unknown keys are an error).

An experiment file holds only what differs from its parent, the experiment named by its
top-level ``parent:`` key (detectron2's ``_BASE_``). :func:`experiment_config_files` resolves
a file into the chain ``_base/default.yaml``, grand-parent, parent, file; the CLI puts that
chain in place of the file's ``--config`` before parsing, so ``--print_config`` shows the
resolved whole and the Makefile, benchmarks and tests all resolve experiments alike.

Every fit is a run of its own in ``$OBJDECOMP_RESULTS/<experiment>/<run>/`` (checkpoints,
pictures, resolved config, W&B files, ``run.json``; objdecomp/runs.py names it). The same command
with ``--ckpt_path=last`` resumes the newest run of that experiment and seed from its newest
intact checkpoint; ``--ckpt_path=<file>`` continues (or, for ``test``, evaluates) the run the file
belongs to. The model is rebuilt with the checkpoint's hyper-parameters, except those the
command line sets (``--model.*`` flags win); a checkpoint of another method is refused. Data are
checked before any run folder or W&B run is made, and every fit ends with a checkpoint of its
last step (objdecomp/callbacks/checkpoints.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import yaml
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from datamodules.base import ObjectDataModule
from datamodules.paths import DatasetNotFoundError
from objdecomp.callbacks.checkpoints import GracefulStop, RunCheckpoint
from objdecomp.callbacks.pictures import DecompositionPictures
from objdecomp.callbacks.predictions import DecompositionWriter
from objdecomp.callbacks.progress import RunProgressBar
from objdecomp.callbacks.results import ResultsWriter
from objdecomp.checkpoints import checkpoint_problem, model_from_checkpoint, resolve_last
from objdecomp.methods.base import DecompositionModule
from objdecomp.paths import EXPERIMENTS
from objdecomp.runs import RUN_DIR_ENV, RunInfo, experiment_name_from_configs, make_logger

FACTS = ("image_size", "channels", "max_objects", "num_classes", "num_background")
BASE_CONFIG = EXPERIMENTS / "_base" / "default.yaml"
PARENT_KEY = "parent"
NOT_EXPERIMENTS = ("_base", "sweeps")  # folders of experiments/ that hold other YAML files
# experiments/ files that are data about experiments: the paper tables, the comparison grid
NOT_EXPERIMENT_FILES = ("paper_tables.yaml", "comparison.yaml")

# The seed is in the config and the results file; Lightning's "Seed set to" line says nothing more.
logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)


def quiet_known_warnings() -> None:
    """Silence warnings about things that are known and handled (set per command, since tests
    reset the filters)."""
    # Lightning 2.6's own pytree helper still builds torch's deprecated LeafSpec; nothing to act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
    # The datamodule keeps the training sampler's position in checkpoints (datamodules/base.py),
    # which Lightning cannot see: its warning that a mid-epoch resume is unreliable does not apply.
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch")


# --- experiments: a file, the parents it names and the shared defaults -------------------------
def experiment_config_files(experiment: Union[str, Path]) -> List[Path]:
    """The config files that make up an experiment, in the order the CLI reads them (the last
    wins): ``_base/default.yaml``, each ancestor named by a ``parent:`` key from the oldest,
    then the file itself.

    Args:
        experiment: a name under experiments/ (``quick/dti_sprites_tetrominoes``) or the path
            of a YAML file (a file outside experiments/ without a parent is its own chain).

    Raises:
        FileNotFoundError: the experiment, or a parent it names, has no file.
        ValueError: a ``parent:`` that is not an experiment name, or parents in a cycle.
    """
    chain = [_experiment_file(experiment)]
    while (parent := _declared_parent(chain[-1])) is not None:
        path = _experiment_file(parent, named_by=chain[-1])
        if path in chain:
            cycle = " -> ".join(_shown(p) for p in [*chain, path])
            raise ValueError(f"experiment parents form a cycle: {cycle}")
        chain.append(path)
    chain.reverse()
    return ([BASE_CONFIG.resolve()] if is_experiment_file(chain[0]) else []) + chain


def config_arguments(experiment: Union[str, Path]) -> List[str]:
    """``--config`` arguments of an experiment's files, for an in-process :class:`ObjdecompCLI`."""
    return [arg for path in experiment_config_files(experiment) for arg in ("--config", str(path))]


def override_argument(item: str) -> str:
    """A short config override as a CLI flag: ``model.lr=1e-3`` -> ``--model.init_args.lr=1e-3``
    (likewise ``data.``); anything else ``key=value`` -> ``--key=value``."""
    key, _, value = item.partition("=")
    section, _, name = key.partition(".")
    if section in ("model", "data") and not name.startswith(("init_args.", "class_path")):
        key = f"{section}.init_args.{name}"
    return f"--{key}={value}"


def experiment_names() -> List[str]:
    """Every experiment under experiments/, e.g. ``quick/dti_sprites_tetrominoes``."""
    return sorted(path.relative_to(EXPERIMENTS).with_suffix("").as_posix()
                  for path in EXPERIMENTS.rglob("*.yaml") if is_experiment_file(path))


def is_experiment_file(path: Path) -> bool:
    """Under experiments/, and neither shared defaults, a sweep, the paper tables nor the comparison."""
    path = Path(path).resolve()
    try:
        parts = path.relative_to(EXPERIMENTS.resolve()).parts
    except ValueError:
        return False
    return parts[0] not in NOT_EXPERIMENTS and not (len(parts) == 1 and parts[0] in NOT_EXPERIMENT_FILES)


def expand_config_arguments(argv: Sequence[str]) -> List[str]:
    """``argv`` with each ``--config FILE`` preceded by the files of its chain (the shared
    defaults, its ancestors); a file the command line already read is not read again, so an
    explicit ``--config experiments/_base/default.yaml`` first changes nothing."""
    expanded: List[str] = []
    read = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--config") and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            expanded.append(arg)
            i += 1
            continue
        if Path(value).is_file():  # else inline YAML or a wrong path: the parser says which
            *ancestors, own = experiment_config_files(value)
            expanded += [flag for path in ancestors if path not in read for flag in ("--config", str(path))]
            read.update(ancestors, [own])
        expanded += ["--config", value]
    return expanded


def _experiment_file(experiment: Union[str, Path], named_by: Optional[Path] = None) -> Path:
    path = Path(experiment)
    if path.suffix not in (".yaml", ".yml"):
        path = EXPERIMENTS / f"{experiment}.yaml"
    if not path.is_file():
        what = f"parent '{experiment}' named by {_shown(named_by)}" if named_by else f"experiment '{experiment}'"
        raise FileNotFoundError(f"{what}: no file {path} (`make experiments` lists the experiments)")
    return path.resolve()


def _declared_parent(path: Path) -> Optional[str]:
    content = yaml.safe_load(path.read_text())
    parent = content.get(PARENT_KEY) if isinstance(content, dict) else None
    if parent is not None and (not isinstance(parent, str) or parent.endswith((".yaml", ".yml"))):
        raise ValueError(f"{_shown(path)}: '{PARENT_KEY}:' names an experiment as `make train EXP=` "
                         f"does (e.g. dti_sprites_tetrominoes), got {parent!r}")
    return parent


def _shown(path: Path) -> str:
    try:
        return path.relative_to(EXPERIMENTS.resolve()).as_posix()
    except ValueError:
        return str(path)


# --- the command ---------------------------------------------------------------------------------
class ObjdecompArgumentParser(LightningArgumentParser):
    """Exact option names only (``--trainer.max_step`` is an error, never ``max_steps``), and an
    error that names the offending key first, without the 70 lines of usage."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Optional[Exception] = None):
        if not self.exit_on_error:  # jsonargparse trying alternatives: not the final word
            return super().error(message, ex)
        command = self.prog.replace(" [options]", "")
        lines = message.strip().splitlines()
        details = "".join(f"  {line}\n" for line in lines) if len(lines) > 2 else ""
        sys.stderr.write(f"error: {error_headline(message)}\n{details}"
                         f"({command} --help lists the options, --print_config the resolved config)\n")
        sys.exit(2)


def error_headline(message: str) -> str:
    """The one line that says what is wrong in a jsonargparse error message."""
    unrecognized = re.search(r"unrecognized arguments: (.+)", message, re.IGNORECASE)
    if unrecognized:
        return f"unknown option {unrecognized.group(1).strip()}"
    section = re.search(r'Parser key "([^"]+)":\s*\n\s*(.+)', message)
    option = re.search(r"Option '([^']+)' is not accepted", message)
    if option:
        owner = re.search(r"class_path '([^']+)'", message)
        key = f"{section.group(1)}.init_args.{option.group(1)}" if section else option.group(1)
        return f"unknown key {key}" + (f" ({owner.group(1)} takes no such argument)" if owner else "")
    problem = re.search(r"Problem with given class_path '([^']+)':\s*\n\s*(.+)", message)
    if section and problem:
        return f"{section.group(1)}: {problem.group(1)}: {problem.group(2).strip()}"
    if section:
        return f"{section.group(1)}: {section.group(2).strip()}"
    return message.strip().splitlines()[0]


class SaveConfigToLogger(SaveConfigCallback):
    """Saves the resolved config beside the run (overwrite-safe) and sends all of it to the logger."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if trainer.logger is None:
            return
        resolved = self.parser.dump(self.config, skip_none=False, format="yaml")
        trainer.logger.log_hyperparams({"config": yaml.safe_load(resolved)})


class ObjdecompCLI(LightningCLI):
    """LightningCLI with dataset facts linked into the model, a run folder per fit, checkpoints
    resolved and checked before anything is built, and data checked before a run is made."""

    def __init__(self, args: Optional[List[str]] = None, **kwargs: Any):
        quiet_known_warnings()
        self.stopper = GracefulStop()
        super().__init__(
            DecompositionModule, ObjectDataModule,
            subclass_mode_model=True, subclass_mode_data=True,
            save_config_callback=SaveConfigToLogger,
            save_config_kwargs={"overwrite": True},  # resumed runs rewrite their config
            auto_configure_optimizers=False,  # each method's configure_optimizers follows its paper
            parser_class=ObjdecompArgumentParser,
            parser_kwargs={"default_env": False},
            args=args, **kwargs,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses ``args`` (``sys.argv`` when None) with each experiment's chain of files expanded."""
        if isinstance(args, (dict, Namespace)):
            self.command_line: List[str] = []
            super().parse_arguments(parser, args)
            return
        self.command_line = expand_config_arguments(sys.argv[1:] if args is None else args)
        self.config = parser.parse_args(self.command_line)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(f"--{PARENT_KEY}", type=Optional[str], default=None,
                            help="set in an experiment file: the experiment (a name under experiments/) "
                                 "whose files the CLI reads before this one, which holds only the diff")
        parser.add_argument("--experiment", type=Optional[str], default=None,
                            help="experiment name (default: the last --config file's path under experiments/)")
        parser.add_argument("--eval_split", type=Literal["train", "val", "test"], default="test",
                            help="the split `test` evaluates (Table 1 of ReDO reports train and test)")
        parser.add_argument("--predictions_dir", type=Optional[str], default=None,
                            help="where `predict` writes label maps, overlays and soft masks "
                                 "(default: the run folder's predictions/)")
        for fact in FACTS:  # dataset facts come from the datamodule, never from a model config
            parser.link_arguments("data", f"model.init_args.{fact}",
                                  compute_fn=_fact_getter(fact), apply_on="instantiate")
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(DecompositionPictures, "pictures")
        parser.set_defaults({
            "seed_everything": 0,
            # The datamodule shards each split itself, without duplicating test images
            # (datamodules/base.py); Lightning's automatic DistributedSampler would pad them.
            "trainer.use_distributed_sampler": False,
            "checkpoint.save_last": True,
        })

    @property
    def run_config(self) -> Namespace:
        """This command's config: its subcommand's part, or the whole when built with ``run=False``."""
        return self.config[self.subcommand] if self.subcommand else self.config

    # --- the checkpoint: which one, of which run, with which model (objdecomp/checkpoints.py) ---
    def _parse_ckpt_path(self) -> None:
        """Resolves ``--ckpt_path`` and rebuilds the model from the checkpoint's hyper-parameters
        under the command line's ``--model.*`` flags (replaces LightningCLI's version)."""
        self.checkpoint_run: Optional[RunInfo] = None  # the run the checkpoint belongs to
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        config.experiment = config.experiment or experiment_name_from_configs(config.get("config") or [])
        if config.get("ckpt_path") == "last":
            last = resolve_last(subcommand, config.experiment, config.seed_everything)
            config.ckpt_path = str(last) if last else None
        path = config.get("ckpt_path")
        if not path or path in LIGHTNING_CHECKPOINT_NAMES:
            return
        problem = checkpoint_problem(Path(path))
        if problem:
            raise SystemExit(f"error: --ckpt_path={path}: {problem}")
        self.checkpoint_run = RunInfo.of_checkpoint(Path(path), config.experiment, config.seed_everything)
        model = model_from_checkpoint(Path(path), config.get("model"), self.command_line, linked=FACTS)
        if model is not None:
            self.config = self.parser.parse_object(
                {subcommand: {"model": {"class_path": model.class_path, "init_args": model.init_args}}},
                self.config)

    # --- the run and its data ----------------------------------------------------------------
    def before_instantiate_classes(self) -> None:
        config = self.run_config
        if self.subcommand != "fit":  # evaluating: the Timer of a max_time run is not needed
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`")
        if self.subcommand == "predict" and config.get("return_predictions") is None:
            config.return_predictions = False  # written as they come (DecompositionWriter), not kept
        if self.subcommand in ("validate", "test", "predict") and not config.get("ckpt_path"):
            rank_zero_warn(f"{self.subcommand} without --ckpt_path evaluates an untrained model; "
                           "its results file names no checkpoint and `objdecomp tables` ignores it")
        config.experiment = config.experiment or experiment_name_from_configs(config.get("config") or [])
        self.run = self.checkpoint_run or RunInfo.new(config.experiment, config.seed_everything)
        if config.trainer.default_root_dir is None:
            config.trainer.default_root_dir = str(self.run.directory)
        elif self.checkpoint_run is None:  # a folder of the caller's choice (benchmarks) holds the run
            self.run = dataclasses.replace(self.run, directory=Path(config.trainer.default_root_dir))
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(self.run.directory / "checkpoints")

    def _instantiate_trainer(self, config: Dict[str, Any], callbacks: list):
        self.datamodule.test_split = self.run_config.eval_split
        self._check_data()  # before the logger makes a run folder and a W&B run
        if config.get("logger") in (None, True):
            config["logger"] = make_logger(self.run)
        callbacks.append(ResultsWriter(self.run, self.run_config, self.subcommand))
        if self.subcommand == "fit":
            callbacks.append(self.stopper)
        if self.subcommand == "predict":
            folder = self.run_config.predictions_dir or self.run.directory / "predictions"
            callbacks.append(DecompositionWriter(folder))
        configured = [*callbacks, *(config.get("callbacks") or [])]
        if config.get("enable_progress_bar") is not False and not any(
                isinstance(c, ProgressBar) for c in configured):
            callbacks.append(RunProgressBar())
        return super()._instantiate_trainer(config, callbacks)

    def _check_data(self) -> None:
        """Sets the data up now (Lightning reuses it), so that a missing dataset is its message
        alone, before anything is written."""
        if self.subcommand is None:  # run=False: the caller sets things up
            return
        try:
            self.datamodule.setup(self.subcommand)
        except DatasetNotFoundError as error:
            raise SystemExit(f"error: {error}") from None

    def _run_subcommand(self, subcommand: str) -> None:
        # The ranks a DDP launcher starts inside the command inherit the run folder.
        os.environ[RUN_DIR_ENV] = str(self.run.directory)
        try:
            super()._run_subcommand(subcommand)
        finally:
            os.environ.pop(RUN_DIR_ENV, None)

    def after_fit(self) -> None:
        """A fit stopped by a signal exits with 128 + its number, as the signal would have."""
        if self.stopper.received is not None:
            name = signal.Signals(self.stopper.received).name
            rank_zero_info(f"stopped by {name} at global step {self.trainer.global_step}; resume with "
                           "the same command and --ckpt_path=last")
            raise SystemExit(128 + self.stopper.received)


# ckpt_path values Lightning resolves itself ("last" is resolved above, per run).
LIGHTNING_CHECKPOINT_NAMES = ("best", "hpc", "registry")


def _fact_getter(fact: str):
    def get(datamodule: ObjectDataModule):
        return getattr(datamodule, fact)
    return get
