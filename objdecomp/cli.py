"""The ``objdecomp`` command: LightningCLI subcommands plus the suite's own tools.

``objdecomp fit|validate|test|predict --config experiments/<name>.yaml [--key=value …]``
trains or evaluates any method on any datamodule (subclass mode; ordered ``--config``
files, the last wins; unknown keys are an error).

An experiment file holds only what differs from its parent, the experiment named by its
top-level ``parent:`` key (detectron2's ``_BASE_``). :func:`experiment_config_files` resolves
a file into the chain ``_base/default.yaml``, grand-parent, parent, file; the CLI puts that
chain in place of the file's ``--config`` before parsing, so ``--print_config`` shows the
resolved whole and the Makefile, benchmarks and tests all resolve experiments alike.

Every run lives in ``$OBJDECOMP_RESULTS/<experiment>/<run>/`` (checkpoints, pictures,
resolved config, W&B files), with ``run = <experiment>-<seed>-<short git sha>`` so that
rerunning the same command with ``--ckpt_path=last`` resumes the same run.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import yaml
from jsonargparse import Namespace
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from datamodules.base import ObjectDataModule
from objdecomp.callbacks.pictures import DecompositionPictures
from objdecomp.callbacks.results import ResultsWriter
from objdecomp.methods.base import DecompositionModule
from objdecomp.paths import EXPERIMENTS
from objdecomp.runs import RunInfo, experiment_name_from_configs, make_logger
from objdecomp.tables import TABLES_FILE

FACTS = ("image_size", "channels", "max_objects", "num_classes", "num_background")
BASE_CONFIG = EXPERIMENTS / "_base" / "default.yaml"
PARENT_KEY = "parent"
NOT_EXPERIMENTS = ("_base", "sweeps")  # folders of experiments/ that hold other YAML files

# Lightning 2.6's own pytree helper still builds torch's deprecated LeafSpec; nothing to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


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


def experiment_names() -> List[str]:
    """Every experiment under experiments/, e.g. ``quick/dti_sprites_tetrominoes``."""
    return sorted(path.relative_to(EXPERIMENTS).with_suffix("").as_posix()
                  for path in EXPERIMENTS.rglob("*.yaml") if is_experiment_file(path))


def is_experiment_file(path: Path) -> bool:
    """Under experiments/, and neither shared defaults, a sweep nor the paper tables."""
    path = Path(path).resolve()
    try:
        parts = path.relative_to(EXPERIMENTS.resolve()).parts
    except ValueError:
        return False
    return parts[0] not in NOT_EXPERIMENTS and path != TABLES_FILE.resolve()


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
class SaveConfigToLogger(SaveConfigCallback):
    """Saves the resolved config beside the run (overwrite-safe) and sends all of it to the logger."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if trainer.logger is None:
            return
        resolved = self.parser.dump(self.config, skip_none=False, format="yaml")
        trainer.logger.log_hyperparams({"config": yaml.safe_load(resolved)})


class ObjdecompCLI(LightningCLI):
    """LightningCLI with dataset facts linked into the model and run folders named per run."""

    def __init__(self, args: Optional[List[str]] = None, **kwargs: Any):
        super().__init__(
            DecompositionModule, ObjectDataModule,
            subclass_mode_model=True, subclass_mode_data=True,
            save_config_callback=SaveConfigToLogger,
            save_config_kwargs={"overwrite": True},  # resumed runs rewrite their config
            auto_configure_optimizers=False,  # each method's configure_optimizers follows its paper
            parser_kwargs={"default_env": False},
            args=args, **kwargs,
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses ``args`` (``sys.argv`` when None) with each experiment's chain of files expanded."""
        if isinstance(args, (dict, Namespace)):
            super().parse_arguments(parser, args)
            return
        self.config = parser.parse_args(expand_config_arguments(sys.argv[1:] if args is None else args))

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(f"--{PARENT_KEY}", type=Optional[str], default=None,
                            help="set in an experiment file: the experiment (a name under experiments/) "
                                 "whose files the CLI reads before this one, which holds only the diff")
        parser.add_argument("--experiment", type=Optional[str], default=None,
                            help="experiment name (default: the last --config file's path under experiments/)")
        parser.add_argument("--eval_split", type=Literal["train", "val", "test"], default="test",
                            help="the split `test` evaluates (Table 1 of ReDO reports train and test)")
        for fact in FACTS:  # dataset facts come from the datamodule, never from a model config
            parser.link_arguments("data", f"model.init_args.{fact}",
                                  compute_fn=_fact_getter(fact), apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
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

    def before_instantiate_classes(self) -> None:
        if self.subcommand != "fit":  # evaluating: the Timer of a max_time run is not needed
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`")
        config = self.run_config
        experiment = config.experiment or experiment_name_from_configs(config.get("config") or [])
        self.run = RunInfo.create(experiment, seed=config.seed_everything,
                                  ckpt_path=config.get("ckpt_path"))
        config.experiment = experiment
        if config.trainer.default_root_dir is None:
            config.trainer.default_root_dir = str(self.run.directory)
        if config.checkpoint.dirpath is None:
            config.checkpoint.dirpath = str(self.run.directory / "checkpoints")

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.datamodule.test_split = self.run_config.eval_split

    def _instantiate_trainer(self, config: Dict[str, Any], callbacks: list):
        if config.get("logger") in (None, True):
            config["logger"] = make_logger(self.run)
        callbacks.append(ResultsWriter(self.run, self.run_config, self.subcommand))
        return super()._instantiate_trainer(config, callbacks)


def _fact_getter(fact: str):
    def get(datamodule: ObjectDataModule):
        return getattr(datamodule, fact)
    return get
