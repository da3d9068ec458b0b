"""The parts of objdecomp/training and the base's evaluation scores: alternating updates (order,
ratios, clipping, counting), exact resume (RNG states, the sampler's place in its epoch, the hooks
Lightning skips on resume), per-image scores averaged exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from objdecomp.training import AlternatingUpdates, ExactResume, Player
from datamodules.base import ShardedSampler
from objdecomp.training.resume import restore_rng_states, rng_states
from objdecomp.types import ContractError
from tests.tiny import TinyMethod, TinySquaresDataModule

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")


def trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, **kwargs)


class Game(pl.LightningModule):
    """Three one-parameter players: ``a`` every batch, ``b`` three times in a row, ``c`` on one
    batch in two, clipped at norm 0.5; every loss also reads the other players' parameters."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.a, self.b, self.c = (nn.Parameter(torch.ones(1)) for _ in range(3))
        self.updates = AlternatingUpdates([Player("a"), Player("b", steps=3),
                                           Player("c", every=2, gradient_clip_val=0.5)])
        self.calls, self.grad_norms = [], []

    def loss(self, name: str):
        def value():
            self.calls.append(name)
            others = [p for n, p in (("a", self.a), ("b", self.b), ("c", self.c)) if n != name]
            assert all(not p.requires_grad for p in others)  # toggled off for this update
            return 10 * getattr(self, name).sum() + sum(p.sum() for p in others)
        return value

    def training_step(self, batch, batch_idx):
        self.updates.step(self, {name: self.loss(name) for name in "abc"})

    def on_before_optimizer_step(self, optimizer):
        self.grad_norms.append(float(sum(p.grad.norm() for g in optimizer.param_groups
                                         for p in g["params"] if p.grad is not None)))

    def configure_optimizers(self):
        return [torch.optim.SGD([p], lr=0.1) for p in (self.a, self.b, self.c)]

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(3, 1), batch_size=1)


def test_players_update_in_order_with_their_ratios_and_clipping():
    game = Game()
    run = trainer(max_epochs=1)
    run.fit(game)
    assert game.calls == ["a", "b", "b", "b", "c",  # batch 0: c plays
                          "a", "b", "b", "b",  # batch 1: c sits out
                          "a", "b", "b", "b", "c"]
    assert run.global_step == game.updates.optimizer_steps(3) == 14
    assert game.grad_norms[4] == pytest.approx(0.5)  # c's gradient 10, clipped
    assert game.grad_norms[0] == pytest.approx(10.0)  # a's, not clipped


def test_alternating_updates_refuse_a_mismatch():
    with pytest.raises(ValueError, match="differ"):
        AlternatingUpdates([Player("g"), Player("g")])
    with pytest.raises(ValueError, match="at least 1"):
        Player("d", steps=0)
    game = Game()
    game.updates = AlternatingUpdates([Player("a"), Player("b")])
    with pytest.raises(ValueError, match="2 players but 3 optimizers"):
        trainer(max_epochs=1).fit(game)


def test_rng_states_restore_every_generator():
    states = rng_states()
    drawn = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_states(states)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(drawn[0], again[0]) and np.array_equal(drawn[1], again[1])
    assert drawn[2] == again[2]


def test_checkpoints_carry_rng_states_that_load_with_weights_only(tmp_path):
    model = TinyMethod(image_size=16, max_objects=3, num_classes=2)
    run = trainer(max_steps=2, default_root_dir=tmp_path)
    run.fit(model, TinySquaresDataModule())
    assert any(isinstance(c, ExactResume) for c in run.callbacks)  # from configure_callbacks
    run.save_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert set(checkpoint["rng_states"]) == {"torch", "numpy", "python", "cuda"}
    expected = torch.rand(4, generator=torch.Generator().set_state(checkpoint["rng_states"]["torch"]))
    resume = ExactResume()
    resume.on_load_checkpoint(run, model, checkpoint)
    torch.rand(7)  # what a fit's start draws (a loader's seed, a sanity check) does not count:
    resume.on_train_batch_start(run, model, None, 0)  # the states come back before the first batch
    assert torch.equal(torch.rand(4), expected)


class Scored(TinyMethod):
    """Scores each image by its mean brightness (a stand-in for an ELBO)."""

    evaluation_scores = ("brightness",)

    def score_images(self, batch, decomposition):
        return {"brightness": batch["image"].mean((1, 2, 3)) * self.hparams.scale}

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters()


def test_evaluation_scores_are_the_exact_mean_over_the_split():
    data = TinySquaresDataModule(test_size=21, eval_batch_size=4)  # uneven last batch
    run = trainer()
    (logged,) = run.test(Scored(image_size=16, max_objects=3, num_classes=2), data, verbose=False)
    data.setup("test")
    images = data.sample_batch("test", 21)["image"]
    assert logged["test/brightness"] == pytest.approx(images.mean().item(), abs=1e-6)


def test_evaluation_scores_of_the_wrong_shape_are_a_contract_error():
    class Broken(Scored):
        def score_images(self, batch, decomposition):
            return {"brightness": batch["image"].mean()}

    with pytest.raises(ContractError, match="'brightness' of shape"):
        trainer().test(Broken(image_size=16, max_objects=3, num_classes=2),
                       TinySquaresDataModule(test_size=4), verbose=False)


@pytest.mark.filterwarnings("ignore:Checkpoint directory", "ignore:Be aware that when using `ckpt_path`")
def test_a_resumed_stochastic_run_equals_the_uninterrupted_one(tmp_path):
    """DTI-Sprites draws its mask noise from the global RNG; with ExactResume, resuming from
    the checkpoint a run wrote after its first epoch gives its final weights bit for bit."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from tests.test_methods import tiny_dti_sprites

    def fit(ckpt_path=None, callbacks=()):
        torch.manual_seed(0)
        model = tiny_dti_sprites()
        run = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, max_steps=4,
                         default_root_dir=tmp_path, callbacks=list(callbacks))
        run.fit(model, TinySquaresDataModule(train_size=16, batch_size=8), ckpt_path=ckpt_path)
        return model

    saver = ModelCheckpoint(tmp_path / "checkpoints", every_n_train_steps=2, save_top_k=-1)
    straight = fit(callbacks=[saver])  # 2 steps per epoch: a checkpoint after epoch 0
    torch.manual_seed(12345)  # what ran in between must not matter
    resumed = fit(ckpt_path=tmp_path / "checkpoints" / "epoch=0-step=2.ckpt")
    assert straight.state_dict().keys() == resumed.state_dict().keys()
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_the_sampler_resumes_inside_its_epoch_once():
    sampler = ShardedSampler(10, shuffle=True, even=True, seed=3)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.resume_at(epoch=2, position=4)
    assert list(sampler) == whole[4:]  # the epoch's tail, in the same order
    assert list(sampler) == whole  # once: the next pass is a whole epoch again
    sampler.resume_at(epoch=1, position=4)
    assert list(sampler) == whole  # a position in another epoch is not this one's


def test_checkpoints_carry_the_training_position_inside_an_epoch(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    data = TinySquaresDataModule(train_size=32, batch_size=8)  # 4 batches an epoch
    run = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_val_batches=0,
                     max_steps=6, callbacks=[ModelCheckpoint(tmp_path, every_n_train_steps=6)])
    run.fit(TinyMethod(image_size=16, max_objects=3, num_classes=2), data)
    state = torch.load(tmp_path / "epoch=1-step=6.ckpt", weights_only=True)["TinySquaresDataModule"]
    assert state["train_position"] == {"epoch": 1, "batches": 2}
    assert "train_position" not in data.state_dict()  # outside a running fit
    resumed = TinySquaresDataModule(train_size=32, batch_size=8)
    resumed.load_state_dict(state)
    resumed.setup("fit")
    sampler = resumed.train_dataloader().sampler
    sampler.set_epoch(1)
    assert len(list(sampler)) == 32 - 2 * 8


def scheduled_dti_sprites():
    """Tiny DTI-Sprites whose epoch-start schedules act early: sprites frozen for epoch 0, the
    sprite transformation switched on at epoch 1, rare sprites reassigned every 2 steps."""
    from tests.test_methods import tiny_dti_sprites

    model = tiny_dti_sprites()
    scheduled = type(model)(**{**model.hparams, "freeze_sprites_epochs": 1, "sprite_transforms": "sim@1",
                               "reassign_every": 2})
    scheduled.load_state_dict(model.state_dict(), strict=False)
    return scheduled


@pytest.mark.filterwarnings("ignore:Checkpoint directory", "ignore:Be aware that when using `ckpt_path`",
                            "ignore:You're resuming from a checkpoint that ended before")
@pytest.mark.parametrize("resume_step", [6, 4], ids=["mid-epoch", "epoch's-last-batch"])
def test_a_run_resumed_inside_or_at_the_end_of_an_epoch_equals_the_uninterrupted_one(tmp_path, resume_step):
    """Checkpoints written at a batch's end (periodic ones, a fit's last step): the resumed run
    continues the epoch where it was (not at its first images), with its epoch-start schedules
    and the module's end-of-batch work of the saved batch (a reassignment at step 4)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def fit(ckpt_path=None, callbacks=()):
        torch.manual_seed(0)
        model = scheduled_dti_sprites()
        run = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, max_steps=10,
                         default_root_dir=tmp_path, callbacks=list(callbacks))
        run.fit(model, TinySquaresDataModule(train_size=32, batch_size=8), ckpt_path=ckpt_path)
        return model

    saver = ModelCheckpoint(tmp_path / "checkpoints", every_n_train_steps=1, save_top_k=-1)
    straight = fit(callbacks=[saver])  # 4 batches an epoch
    torch.manual_seed(12345)  # what ran in between must not matter
    epoch = (resume_step - 1) // 4
    resumed = fit(ckpt_path=tmp_path / "checkpoints" / f"epoch={epoch}-step={resume_step}.ckpt")
    assert int(resumed.net.sequences[1].num_active) == 1 and not bool(resumed.frozen)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
