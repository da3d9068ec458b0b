"""Schedules: values at their boundaries, the counter each reads, YAML configuration, logging."""

from __future__ import annotations

import math
import sys
from typing import Union

import pytest
import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser
from pytorch_lightning.cli import LightningCLI

from objdecomp.schedules import (Constant, Cosine, Curriculum, Exponential, Linear, Piecewise,
                                 Schedule, StepDecay, as_lr_lambda, log_schedules, value)


def test_annealing_values_at_boundaries():
    linear = Linear(start=0.0, end=1.0, duration=100, begin=10)
    assert [linear(t, 0) for t in (0, 10, 60, 110, 10**6)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    exponential = Exponential(start=1.0, end=0.01, duration=2)
    assert [exponential(t, 0) for t in (0, 1, 2, 3)] == pytest.approx([1.0, 0.1, 0.01, 0.01])
    cosine = Cosine(start=2.0, end=0.0, duration=10)
    assert [cosine(t, 0) for t in (0, 5, 10, 11)] == pytest.approx([2.0, 1.0, 0.0, 0.0])
    assert cosine(2, 0) == pytest.approx(1 + math.cos(math.pi * 0.2))


def test_zero_duration_is_a_switch_at_begin():
    switch = Linear(start=3.0, end=7.0, duration=0, begin=5)
    assert [switch(t, 0) for t in (4, 5, 6)] == [3.0, 7.0, 7.0]


def test_piecewise_curriculum_and_step_decay():
    freeze = Piecewise({0: 1.0, 10: 0.0})
    assert [freeze(t, 0) for t in (0, 9, 10, 50)] == [1.0, 1.0, 0.0, 0.0]
    stages = Piecewise({20: 2, 0: 0, 5: 1})  # order of the YAML keys does not matter
    assert [stages(t, 0) for t in (0, 4, 5, 19, 20)] == [0, 0, 1, 1, 2]
    modules = Curriculum([0, 100, 350])
    assert [modules(t, 0) for t in (0, 99, 100, 349, 350)] == [1, 1, 2, 2, 3]
    assert Curriculum([150], minimum=1)(0, 0) == 1  # the first module on before its count
    assert [StepDecay([100, 200])(t, 0) for t in (99, 100, 200)] == pytest.approx([1, 0.1, 0.01])
    assert Constant(0.3)(10**9, 10**9) == 0.3


def test_invalid_schedules_are_refused():
    with pytest.raises(ValueError, match="count 0"):
        Piecewise({10: 0.0})
    with pytest.raises(ValueError, match="one sign"):
        Exponential(start=0.0, end=1.0, duration=10)
    with pytest.raises(ValueError, match="must not decrease"):
        Curriculum([10, 5])
    with pytest.raises(ValueError, match="unit"):
        Linear(0, 1, 10, unit="batch")


def test_unit_selects_the_counter():
    by_step = Linear(0.0, 1.0, duration=10, unit="step")
    by_epoch = Linear(0.0, 1.0, duration=10, unit="epoch")
    assert (by_step(5, 1), by_epoch(5, 1)) == (0.5, 0.1)
    assert value(0.25, 5, 1) == 0.25 and value(by_epoch, 5, 10) == 1.0


def test_lr_lambda_is_a_plain_function_so_scheduler_state_holds_no_object():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, as_lr_lambda(StepDecay([1], unit="epoch")))
    assert scheduler.state_dict()["lr_lambdas"] == [None]
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


class Annealed:
    def __init__(self, beta: Union[float, Schedule] = 1.0):
        self.beta = beta


def _parse(yaml: str):
    parser = ArgumentParser()
    parser.add_class_arguments(Annealed, "model")
    config = parser.parse_string(yaml)
    return parser.instantiate_classes(config).model


def test_yaml_configures_a_schedule_or_a_plain_number():
    model = _parse("""
model:
  beta:
    class_path: objdecomp.schedules.Linear
    init_args: {start: 0.0, end: 1.0, duration: 100}
""")
    assert isinstance(model.beta, Linear) and model.beta(50, 0) == 0.5
    assert _parse("model:\n  beta: 0.5\n").beta == 0.5
    pieces = _parse("model:\n  beta:\n    class_path: objdecomp.schedules.Piecewise\n"
                    "    init_args:\n      values: {0: 1.0, 10: 0.0}\n      unit: epoch\n").beta
    assert pieces(0, 9) == 1.0 and pieces(0, 10) == 0.0


class ScheduledModel(pl.LightningModule):
    """One parameter, a step-indexed schedule logged every batch."""

    def __init__(self, beta: Union[float, Schedule] = 1.0):
        super().__init__()
        self.beta = beta
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.logged = []

    def training_step(self, batch, batch_idx):
        self.logged.append(log_schedules(self, {"beta": self.beta})["beta"])
        return (self.weight * batch[0]).sum()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(4, 1), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_cli_configures_the_schedule_and_it_is_logged(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["objdecomp"])  # only args= reaches the parser
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  beta:\n    class_path: objdecomp.schedules.Linear\n"
                      "    init_args: {start: 0.0, end: 1.0, duration: 2}\n")
    cli = LightningCLI(ScheduledModel, run=False, save_config_kwargs={"overwrite": True},
                       args=["--config", str(config), "--seed_everything=0", "--trainer.max_steps=4",
                             "--trainer.logger=false", "--trainer.enable_checkpointing=false",
                             "--trainer.enable_progress_bar=false",
                             "--trainer.enable_model_summary=false",
                             f"--trainer.default_root_dir={tmp_path}"])
    cli.trainer.fit(cli.model)
    assert cli.model.logged == [0.0, 0.5, 1.0, 1.0]  # the step counter: batches completed
    assert cli.trainer.callback_metrics["schedule/beta"] == 1.0
