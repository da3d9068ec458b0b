"""The ``objdecomp`` command: LightningCLI subcommands plus the suite's own tools.

``objdecomp fit|validate|test|predict --config experiments/<name>.yaml [--key=value …]``
trains or evaluates any method on any datamodule (subclass mode; ordered ``--config``
files, the last wins; unknown keys are an error).

Every run lives in ``$OBJDECOMP_RESULTS/<experiment>/<run>/`` (checkpoints, pictures,
resolved config, W&B files), with ``run = <experiment>-<seed>-<short git sha>`` so that
rerunning the same command with ``--ckpt_path=last`` resumes the same run.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Literal, Optional

import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from datamodules.base import ObjectDataModule
from objdecomp.callbacks.pictures import DecompositionPictures
from objdecomp.callbacks.results import ResultsWriter
from objdecomp.methods.base import DecompositionModule
from objdecomp.runs import RunInfo, experiment_name_from_configs, make_logger

FACTS = ("image_size", "channels", "max_objects", "num_classes", "num_background")

# Lightning 2.6's own pytree helper still builds torch's deprecated LeafSpec; nothing to act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)


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

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
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

    def before_instantiate_classes(self) -> None:
        if self.subcommand != "fit":  # evaluating: the Timer of a max_time run is not needed
            warnings.filterwarnings("ignore", message=r"Be aware that when using `ckpt_path`")
        config = self.config[self.subcommand]
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
        self.datamodule.test_split = self.config[self.subcommand].eval_split

    def _instantiate_trainer(self, config: Dict[str, Any], callbacks: list):
        if config.get("logger") in (None, True):
            config["logger"] = make_logger(self.run)
        callbacks.append(ResultsWriter(self.run, self.config[self.subcommand], self.subcommand))
        return super()._instantiate_trainer(config, callbacks)


def _fact_getter(fact: str):
    def get(datamodule: ObjectDataModule):
        return getattr(datamodule, fact)
    return get
