"""ReDO (objdecomp/methods/redo), its collapse restart and its textured-shape dataset."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import default_collate

from datamodules.textured_shape import TexturedShapeDataModule, item_parameters
from objdecomp.callbacks.collapse import CollapseRestart
from objdecomp.methods.redo import MaskNetwork, ReDO, ReDONetworks, ReDOSupervised
from objdecomp.methods.redo.pictures import redrawing_figure
from objdecomp.nn.gan import SelfAttention
from objdecomp.types import check_batch

TINY = dict(image_size=16, z_dim=4, mask_width=8, mask_res_blocks=1, gen_width=4, disc_width=4,
            z_net_width=4)


def tiny_module(**kwargs) -> ReDO:
    torch.manual_seed(0)
    return ReDO(**{**TINY, **kwargs})


def tiny_data(**kwargs) -> TexturedShapeDataModule:
    return TexturedShapeDataModule(**{**dict(image_size=16, train_size=32, val_size=8,
                                             test_size=8, batch_size=4), **kwargs})


def tiny_trainer(max_steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, use_distributed_sampler=False,
                      limit_val_batches=0, **kwargs)


# --- networks ------------------------------------------------------------------------------
@pytest.mark.parametrize("regions", [2, 3])
def test_mask_network_gives_a_partition_of_unity(regions):
    torch.manual_seed(0)
    net = MaskNetwork(3, regions, width=8, num_res_blocks=1)
    images = torch.rand(2, 3, 24, 24) * 2 - 1
    masks = net(images)
    assert masks.shape == (2, regions, 24, 24)
    assert torch.allclose(masks.sum(1), torch.ones(2, 24, 24), atol=1e-6)
    if regions == 2:  # the code's sigmoid of one logit, with its complement
        logit = net.logits(images)[:, 0]
        assert torch.allclose(masks[:, 0], torch.sigmoid(logit), atol=1e-6)


@pytest.mark.parametrize("downsampling", [1, 2])
def test_mask_network_features_are_downsampled_as_asked(downsampling):
    net = MaskNetwork(3, 2, width=8, num_res_blocks=1, downsampling=downsampling)
    images = torch.rand(2, 3, 24, 24)
    assert net.encoder(images).shape[-1] == 24 // 2 ** downsampling
    assert net(images).shape == (2, 2, 24, 24)


def test_mask_network_rejects_other_downsampling():
    with pytest.raises(ValueError, match="downsamples once or twice"):
        MaskNetwork(3, 2, width=8, downsampling=3)


def test_channels_last_gives_the_same_decomposition():
    torch.manual_seed(0)
    default = ReDO(**TINY, channels_last=False).eval()
    fast = ReDO(**TINY, channels_last=True).eval()
    fast.load_state_dict(default.state_dict())
    assert fast.nets.mask.encoder[1].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 16, 16)
    assert torch.allclose(fast.decompose(images).masks, default.decompose(images).masks, atol=1e-5)


def test_redrawing_keeps_every_pixel_outside_the_redrawn_region():
    torch.manual_seed(0)
    nets = ReDONetworks(num_regions=2, **{k: v for k, v in TINY.items()})
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    left = torch.zeros(16, 16)
    left[:, :8] = 1
    hard = torch.stack([left, 1 - left])[None].repeat(2, 1, 1, 1)
    out = nets.redraw(images, hard, torch.randn(2, 4), torch.tensor([0, 1]))
    assert torch.equal(out[0, :, :, 8:], images[0, :, :, 8:])  # region 0 = left half redrawn
    assert torch.equal(out[1, :, :, :8], images[1, :, :, :8])  # region 1 = right half redrawn
    assert not torch.allclose(out[0, :, :, :8], images[0, :, :, :8])
    # Soft masks: a pixel moves by at most m_i * |G_i - I| <= 2 m_i (both in [-1, 1]).
    soft = nets.mask(images)
    region = torch.tensor([1, 0])
    out = nets.redraw(images, soft, torch.randn(2, 4), region)
    m_i = soft[torch.arange(2), region][:, None]
    assert ((out - images).abs() <= 2 * m_i + 1e-6).all()


def test_redraw_all_matches_redrawing_each_region_in_turn():
    torch.manual_seed(0)
    nets = ReDONetworks(num_regions=3, cond_norm="instance", **TINY).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    masks, z = nets.mask(images), torch.randn(2, 3, 4)
    redrawn, generated = nets.redraw_all(images, masks, z)
    for k in range(3):
        one = nets.redraw(images, masks, z[:, k], torch.full((2,), k))
        assert torch.allclose(redrawn[:, k], one, atol=1e-6)
    expected = sum(masks[:, k : k + 1] * nets.region_appearance(masks, z[:, k], k) for k in range(3))
    assert torch.allclose(generated, expected, atol=1e-6)


# --- the module --------------------------------------------------------------------------------
def test_decompose_follows_the_contract():
    module = tiny_module(num_regions=3)
    images = torch.rand(2, 3, 16, 16)
    decomposition = module.checked_decompose(images)
    assert decomposition.masks.shape == (2, 3, 16, 16)
    assert decomposition.background.tolist() == [False, False, True]
    assert torch.equal(decomposition.recon, images)


def test_generator_terms_on_a_hand_built_discriminator_and_delta(monkeypatch):
    module = tiny_module(redraw="one")
    region, z = torch.tensor([0, 1, 1]), torch.randn(3, 4)
    monkeypatch.setattr(module.nets.discriminator, "forward", lambda x: torch.full((x.shape[0], 1), 3.0))
    # δ right on the asked head, wrong on the other: the term only reads head δ_i.
    heads = torch.stack([z, z], 1) + 10
    heads[torch.arange(3), region] = z
    monkeypatch.setattr(module.nets, "reconstruct_z", lambda x: heads)
    adversarial, z_error = module._generator_terms(torch.rand(3, 3, 16, 16) * 2 - 1, region, z)
    assert adversarial.item() == pytest.approx(-3.0)
    assert z_error.item() == pytest.approx(0.0)
    heads[torch.arange(3), region] = z + 1  # off by one in every dimension: mean square 1
    assert module._generator_terms(torch.rand(3, 3, 16, 16), region, z)[1].item() == pytest.approx(1.0)


def test_one_iteration_updates_exactly_the_right_parameters(monkeypatch):
    """G step: F, G_0 (the only region redrawn) and δ; D step: D alone."""
    module = tiny_module(redraw="one")
    monkeypatch.setattr(module, "_sample", lambda b: (torch.zeros(b, dtype=torch.long),
                                                      torch.randn(b, module.z_dim)))
    snapshots = [{n: p.detach().clone() for n, p in module.named_parameters()}]
    update = module.updates.update

    def recording(*args, **kwargs):
        value = update(*args, **kwargs)
        snapshots.append({n: p.detach().clone() for n, p in module.named_parameters()})
        return value

    monkeypatch.setattr(module.updates, "update", recording)
    tiny_trainer(max_steps=2).fit(module, tiny_data())
    assert len(snapshots) == 3
    # Attention weights get zero gradient while their gamma is 0 (SAGAN init), so they stay.
    frozen = {f"{prefix}.{n}" for prefix, m in module.named_modules()
              if isinstance(m, SelfAttention) for n, _ in m.named_parameters() if n != "gamma"}
    moving = [n for n, _ in module.named_parameters() if n not in frozen]
    g_step = {n for n in snapshots[0] if not torch.equal(snapshots[0][n], snapshots[1][n])}
    d_step = {n for n in snapshots[0] if not torch.equal(snapshots[1][n], snapshots[2][n])}
    expected_g = {n for n in moving if n.startswith(("nets.mask.", "nets.generators.0.", "nets.z_net."))}
    expected_d = {n for n in moving if n.startswith("nets.discriminator.")}
    assert g_step == expected_g
    assert d_step == expected_d


def test_extra_discriminator_steps_and_learning_rate(monkeypatch):
    """discriminator_steps=2: each batch is one G step then two D steps, at D's own rate."""
    module = tiny_module(discriminator_steps=2, discriminator_lr=4e-4)
    calls = []
    update = module.updates.update

    def recording(module, optimizer, loss, gradient_clip_val=None):
        calls.append(optimizer.optimizer.param_groups[0]["lr"])
        return update(module, optimizer, loss, gradient_clip_val)

    monkeypatch.setattr(module.updates, "update", recording)
    trainer = tiny_trainer(max_steps=6)
    trainer.fit(module, tiny_data())
    assert calls == [1e-5, 4e-4, 4e-4] * 2  # F's group first in the G optimizer
    assert module.batch_step == 2 and module.updates.optimizer_steps(2) == trainer.global_step
    with pytest.raises(ValueError, match="discriminator_steps"):
        tiny_module(discriminator_steps=0)


@pytest.mark.parametrize("redraw", ["one", "all"])
def test_training_runs_under_bf16_autocast(redraw):
    module = tiny_module(redraw=redraw)
    trainer = tiny_trainer(max_steps=2, precision="bf16-mixed")
    trainer.fit(module, tiny_data())
    assert trainer.global_step == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch, native):
    import warnings

    monkeypatch.setattr("objdecomp.training.precision.cpu_has_native_bf16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(max_steps=1, precision="bf16-mixed").fit(tiny_module(), tiny_data())
    emulated = [w for w in caught if "is emulated" in str(w.message)]
    assert len(emulated) == (0 if native else 1)


def test_collapse_restart_is_bounded_logged_and_reinitialises(caplog):
    module, data = tiny_module(), tiny_data()
    callback = CollapseRestart(threshold=1.0, check_every=2, window=100, max_restarts=2, seed=7)
    trainer = tiny_trainer(max_steps=8, callbacks=[callback])
    with caplog.at_level(logging.WARNING, logger="objdecomp.callbacks.collapse"):
        trainer.fit(module, data)
    assert callback.restarts == 2
    assert sum("restart" in r.message and "from fresh weights" in r.message for r in caplog.records) == 2
    assert any("used up" in r.message for r in caplog.records)
    # Each restart was at 2 batches (4 optimizer steps) into its attempt: the budget grew by 8.
    assert trainer.global_step == 16
    # Restarting from the same seed gives the same weights on every process.
    module.restart(9)
    first = {k: v.clone() for k, v in module.nets.state_dict().items()}
    module.restart(9)
    assert all(torch.equal(first[k], v) for k, v in module.nets.state_dict().items())
    assert all(not opt.optimizer.state for opt in module.optimizers())


def test_collapse_statistic_is_the_smallest_region_share_of_the_soft_masks(monkeypatch):
    module = tiny_module(num_regions=3)
    masks = torch.zeros(2, 3, 16, 16)
    masks[0, 0], masks[1, 1, :, :4], masks[1, 2, :, 4:] = 1, 1, 1  # shares 0.5, 0.125, 0.375
    monkeypatch.setattr(module.nets.mask, "forward", lambda images: masks)
    assert module.collapse_statistic(torch.rand(2, 3, 16, 16)).item() == pytest.approx(0.125)


def test_redrawing_figure_has_one_row_per_image_and_fig2_columns():
    nets = ReDONetworks(**TINY).eval()
    batch = {"image": torch.rand(3, 3, 16, 16), "mask": torch.randint(0, 2, (3, 16, 16))}
    grid = redrawing_figure(nets, batch, redraws=4)
    columns = 3 + 2 * 4  # input, ground truth, mask, 4 redraws of each region
    assert grid.shape == (3, 2 + 3 * 18, 2 + columns * 18)
    again = redrawing_figure(nets, batch, redraws=4)
    assert torch.equal(grid, again)  # fixed codes per column


# --- supervised baseline ------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "val"])
def test_supervised_baseline_trains_on_the_labelled_subset(split):
    torch.manual_seed(0)
    module = ReDOSupervised(mask_width=8, mask_res_blocks=1, image_size=16)
    data = tiny_data(labelled_subset=5, labelled_split=split, min_epoch_items=12)
    tiny_trainer(max_steps=3).fit(module, data)
    train = data.sample_batch("train", 100)["image"]  # the whole (cycled) training split
    assert len(train) == 12 and len(train.unique(dim=0)) == 5
    val = data.sample_batch("val", 100)["image"]
    assert len(val) == (3 if split == "val" else 8)
    if split == "val":  # model selection on validation images not trained on
        assert len(torch.cat([train, val]).unique(dim=0)) == 5 + 3


# --- the textured-shape dataset ----------------------------------------------------------------
def test_textured_shape_items_are_deterministic_and_follow_the_contract():
    data = tiny_data(image_size=32)
    data.setup("fit")
    train, val = data.datasets["train"], data.datasets["val"]
    assert torch.equal(train[3]["image"], train.__getitems__([1, 3])[1]["image"])
    assert torch.equal(item_parameters(0, "train", 3), item_parameters(0, "train", 3))
    assert not torch.equal(train[0]["image"], val[0]["image"])
    other_seed = TexturedShapeDataModule(32, seed=1).make_dataset("train")
    assert not torch.equal(train[0]["image"], other_seed[0]["image"])
    batch = default_collate([train[i] for i in range(8)])
    check_batch(batch)
    assert batch["image"].shape == (8, 3, 32, 32)
    assert 0 <= batch["image"].min() <= batch["image"].max() <= 1
    share = batch["mask"].float().mean((1, 2))
    assert ((share > 0.05) & (share < 0.5)).all()  # one object, neither tiny nor everything
    inside = batch["image"].permute(1, 0, 2, 3)[:, batch["mask"] == 1]
    outside = batch["image"].permute(1, 0, 2, 3)[:, batch["mask"] == 0]
    assert inside.numel() and outside.numel()


# --- DDP ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_process_cpu_ddp_fit_stays_in_sync(tmp_path: Path):
    script = Path(__file__).with_name("redo_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REDO_DDP_OUT": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_port=29517", str(script)],
        env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sums = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert sums[0]["steps"] == sums[1]["steps"] == 8
    assert torch.equal(sums[0]["parameters"], sums[1]["parameters"])
    assert not torch.equal(sums[0]["parameters"], sums[0]["initial"])  # training moved them
