"""ReDO as the authors' code runs it (issue #14): table configs, network sizes, collapse detection,
pyramid pooling, Figure 4's scoring and D's separate real batch."""

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Dict

import pytest
import pytorch_lightning as pl
import torch
import yaml
from torch.utils.data import DataLoader

from datamodules.textured_shape import TexturedShapeDataModule
from objdecomp.callbacks.collapse import CollapseRestart
from objdecomp.cli import ObjdecompCLI, config_arguments
from objdecomp.methods.redo import MaskNetwork, ReDO, RegionGenerator, ResidualEncoder
from objdecomp.methods.redo.networks import pyramid_pool
from objdecomp.methods.redo.real_batches import IndependentBatches, real_batch_loader
from objdecomp.paths import EXPERIMENTS, REPO_ROOT

TINY = dict(image_size=16, z_dim=4, mask_width=8, mask_res_blocks=1, gen_width=4, disc_width=4,
            z_net_width=4)


def resolved_model_args(experiment: str, capsys, monkeypatch) -> Dict[str, Any]:
    """The model's init_args as `objdecomp fit` resolves the experiment (parents, defaults)."""
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    with pytest.raises(SystemExit):
        ObjdecompCLI(args=["fit", *config_arguments(experiment), "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]


def table_experiments() -> set:
    tables = yaml.safe_load((EXPERIMENTS / "paper_tables.yaml").read_text())["redo"]
    return {cell["experiment"] for table in tables for cell in table["cells"]}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_data(**kwargs) -> TexturedShapeDataModule:
    return TexturedShapeDataModule(**{**dict(image_size=16, train_size=32, val_size=8,
                                             test_size=8, batch_size=4), **kwargs})


def tiny_trainer(max_steps: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, use_distributed_sampler=False,
                      limit_val_batches=0, **kwargs)


# --- 1. generator width per dataset --------------------------------------------------------------
@pytest.mark.parametrize("experiment, width", [
    ("redo_flowers", 32), ("redo_flowers_lfw", 32),  # the README's Flowers command: --nfX 32
    ("redo_lfw", 64), ("redo_cub", 64), ("redo_colored_mnist", 64)])  # the code's default nf
def test_generator_width_is_the_one_the_authors_ran(experiment, width, capsys, monkeypatch):
    assert resolved_model_args(experiment, capsys, monkeypatch)["gen_width"] == width


def test_lfw_generators_have_the_authors_parameter_count(capsys, monkeypatch):
    args = resolved_model_args("redo_lfw", capsys, monkeypatch)
    pair = [RegionGenerator(128, 3, args["z_dim"], args["gen_width"], args["gen_attention"],
                            args["cond_norm"]) for _ in range(args["num_regions"])]
    assert sum(count(g) for g in pair) == 61_867_582


# --- 2. table configs follow the code; the text is a variant --------------------------------------
@pytest.mark.parametrize("experiment", sorted(table_experiments()))
def test_table_configs_run_the_authors_algorithm(experiment, capsys, monkeypatch):
    args = resolved_model_args(experiment, capsys, monkeypatch)
    assert (args["redraw"], args["cond_norm"], args["real_batch"]) == ("all", "instance", "separate")


def test_the_paper_text_is_a_variant_of_the_flowers_config(capsys, monkeypatch):
    code = resolved_model_args("redo_flowers", capsys, monkeypatch)
    text = resolved_model_args("redo_flowers_paper_text", capsys, monkeypatch)
    differing = {k: (code[k], text[k]) for k in code if code[k] != text[k]}
    assert differing == {"redraw": ("all", "one"), "cond_norm": ("instance", "batch"),
                         "fresh_discriminator_codes": (False, True),
                         "sn_init": ("default", "orthogonal")}


def singular_value_spread(weight: torch.Tensor) -> float:
    values = torch.linalg.svdvals(weight.detach().flatten(1).double())
    return float(values.min() / values.max())


@pytest.mark.parametrize("sn_init", ["default", "orthogonal"])
def test_spectrally_normalised_layers_start_as_the_authors_runs_did(sn_init):
    """Their orthogonal init reached the layers without spectral norm only (docs/methods/redo.md)."""
    torch.manual_seed(0)
    nets = ReDO(**TINY, sn_init=sn_init).nets
    normalised = nets.discriminator.blocks[0].conv2.parametrizations.weight.original
    assert (singular_value_spread(normalised) > 0.99) == (sn_init == "orthogonal")
    for plain in (nets.mask.encoder[1].weight, nets.generators[0].dense.weight,
                  nets.discriminator.linear.weight):
        assert singular_value_spread(plain) > 0.99


@pytest.mark.parametrize("fresh", [False, True])
def test_discriminator_step_redraws_with_the_generator_steps_codes(fresh, monkeypatch):
    torch.manual_seed(0)
    module = ReDO(**TINY, fresh_discriminator_codes=fresh)
    seen = {"g": [], "d": []}
    for name, method in (("g", "_generator_terms"), ("d", "_discriminator_loss")):
        original = getattr(module, method)

        def recording(*args, original=original, name=name):
            seen[name].append(args[-1].clone())  # z
            return original(*args)

        monkeypatch.setattr(module, method, recording)
    tiny_trainer(max_steps=4).fit(module, tiny_data())
    assert [torch.equal(g, d) for g, d in zip(seen["g"], seen["d"])] == [not fresh] * 2


def test_network_sizes_are_the_authors():
    """Counted in the authors' networks at 128×128 with two regions (docs/methods/redo.md)."""
    assert count(MaskNetwork(3, 2, width=64, num_res_blocks=3)) == 274_966
    for width, pair in ((32, 15_913_790), (64, 61_867_582)):
        generators = [RegionGenerator(128, 3, 32, width, attention=True, norm="instance")
                      for _ in range(2)]
        assert sum(count(g) for g in generators) == pair
    assert count(ResidualEncoder(128, 3, 64, out_features=1, attention=True)) == 38_424_258
    assert count(ResidualEncoder(128, 3, 64, out_features=2 * 32)) == 38_483_712


# --- 3. collapse detection as the code decides it -------------------------------------------------
class ForceCollapse(pl.Callback):
    """Before training batch ``at`` (1-based), F's last layer is set to put every pixel in region
    0: region 1 becomes empty, the collapse of §4."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready == self.at:
            last = pl_module.nets.mask.decoder[-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.fill_(30.0)


def test_a_collapse_late_in_the_check_interval_is_restarted(caplog):
    """Collapsed at the last of 4 batches between checks: the statistic averaged over those
    batches stays near 0.4, the model as it is at the check has an empty region."""
    torch.manual_seed(0)
    module = ReDO(**TINY)
    callback = CollapseRestart(threshold=0.1, check_every=4, window=100, max_restarts=1, seed=7)
    trainer = tiny_trainer(max_steps=12, callbacks=[ForceCollapse(at=4), callback])
    with caplog.at_level(logging.WARNING, logger="objdecomp.callbacks.collapse"):
        trainer.fit(module, tiny_data())
    assert callback.restarts == 1
    assert callback.attempt_start == 4  # restarted at the check right after the collapse
    assert any("train 0.0000" in r.message and "val 0.0000" in r.message for r in caplog.records)
    statistics = callback.statistics(trainer, module)  # fresh weights: both regions drawn
    assert min(statistics.values()) > 0.1


def test_a_healthy_run_is_not_restarted():
    torch.manual_seed(0)
    callback = CollapseRestart(threshold=0.1, check_every=2, window=100)
    tiny_trainer(max_steps=8, callbacks=[callback]).fit(ReDO(**TINY), tiny_data())
    assert callback.restarts == 0


def test_collapse_needs_both_the_training_and_the_validation_batch_below_threshold():
    callback = CollapseRestart(threshold=0.1)
    assert callback.collapsed({"train": 0.05, "val": 0.02})
    assert not callback.collapsed({"train": 0.05, "val": 0.2})
    assert not callback.collapsed({"train": 0.3, "val": 0.02})
    assert not callback.collapsed({})


# --- 4. pyramid pooling windows as the code ----------------------------------------------------
@pytest.mark.parametrize("cells, window", [(1, 32), (2, 16), (3, 10), (6, 5)])
def test_pyramid_pooling_uses_fixed_windows_of_size_over_cells(cells, window):
    features = torch.randn(2, 4, 32, 32)
    pooled = pyramid_pool(features, cells)
    assert pooled.shape[-2:] == (cells, cells)
    first = features[..., :window, :window].mean(dim=(-2, -1))
    assert torch.allclose(pooled[..., 0, 0], first, atol=1e-6)


def test_pyramid_levels_of_3_and_6_cells_ignore_the_last_rows_and_columns():
    torch.manual_seed(0)
    net = MaskNetwork(3, 2, width=8, num_res_blocks=1)
    features = torch.randn(1, 8, 32, 32)
    changed = features.clone()
    changed[..., 30:, :] += 5  # rows outside the 10- and 5-pixel windows
    changed[..., :, 30:] += 5
    levels = net.context(features)[:, 8:], net.context(changed)[:, 8:]  # one channel per level
    moved = [not torch.allclose(a, b) for a, b in zip(*(level.unbind(1) for level in levels))]
    assert moved == [True, True, False, False]  # 1², 2² cover every pixel; 3², 6² do not


# --- 5. Figure 4's supervised baseline: fixed roles -----------------------------------------------
def load_figure4():
    spec = importlib.util.spec_from_file_location("redo_figure4",
                                                  REPO_ROOT / "benchmarks" / "redo_figure4.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_result(folder: Path, name: str, metrics: Dict[str, float], labelled=None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"data": {"init_args": {"labelled_subset": labelled}}} if labelled else {}
    (folder / f"{name}.json").write_text(json.dumps({"metrics": metrics, "config": config}))


def test_figure4_scores_the_supervised_baseline_with_fixed_roles(tmp_path):
    # An inverted supervised F: the best permutation per image would give it 0.9.
    write_result(tmp_path / "redo_supervised_flowers" / "n50", "run",
                 {"test/fg_acc": 0.2, "test/fg_iou": 0.1, "test/fg_best_acc": 0.9,
                  "test/fg_best_iou": 0.8}, labelled=50)
    write_result(tmp_path / "redo_flowers", "run",
                 {"test/fg_acc": 0.3, "test/fg_iou": 0.2, "test/fg_best_acc": 0.88,
                  "test/fg_best_iou": 0.76})
    flowers = [name for name, _ in load_figure4().DATASETS].index("flowers")
    panels = load_figure4().panels(tmp_path, "")
    (_, accuracy_curve, accuracy_level), (_, iou_curve, iou_level) = (
        panels[flowers, 0], panels[flowers, 1])
    assert accuracy_curve == [(50, 0.2, 1)] and iou_curve == [(50, 0.1, 1)]
    assert (accuracy_level, iou_level) == (0.88, 0.76)  # ReDO: best permutation (Table 1)


@pytest.mark.parametrize("experiment", ["redo_supervised_flowers", "redo_supervised_cub",
                                        "redo_supervised_lfw"])
def test_supervised_baselines_are_selected_with_fixed_roles(experiment, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["objdecomp"])
    with pytest.raises(SystemExit):
        ObjdecompCLI(args=["fit", *config_arguments(experiment), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["checkpoint"]["monitor"] == "val/fg_iou"


# --- 6. D's real batch drawn apart from the redrawn one --------------------------------------------
class DiscriminatorInputs:
    """The redrawn batch of each step, and the real images D judges in its step."""

    def __init__(self, module: ReDO):
        self.redrawn, self.real = [], []
        loss = module._discriminator_loss

        def recording(images, real, *codes):
            self.redrawn.append(images.detach().clone())
            self.real.append(real.detach().clone())
            return loss(images, real, *codes)

        module._discriminator_loss = recording


@pytest.mark.parametrize("real_batch", ["separate", "same"])
def test_discriminator_real_images_are_another_batch_of_training_images(real_batch):
    torch.manual_seed(0)
    module = ReDO(**TINY, real_batch=real_batch, channels_last=False)
    record = DiscriminatorInputs(module)
    data = tiny_data()
    tiny_trainer(max_steps=6).fit(module, data)
    training = data.sample_batch("train", 32)["image"] * 2 - 1
    for redrawn, real in zip(record.redrawn, record.real):
        assert torch.equal(redrawn, real) == (real_batch == "same")
        for image in real:  # every real image is a training image
            assert (training - image).abs().flatten(1).amax(1).min() < 1e-6


def test_the_real_batch_stream_covers_each_epoch_and_resumes_at_any_batch():
    stream = IndependentBatches(length=10, batch_size=3, seed=4)
    batches = [b for b, _ in zip(stream, range(9))]
    assert stream.batches_per_epoch() == 3
    for epoch in range(3):  # 3 disjoint batches per epoch, the last partial one dropped
        indices = sum(batches[3 * epoch : 3 * epoch + 3], [])
        assert len(set(indices)) == 9
    assert batches[3:6] != batches[:3]  # a new permutation each epoch
    for start in (1, 3, 5):
        resumed = IndependentBatches(length=10, batch_size=3, seed=4, start=start)
        assert [b for b, _ in zip(resumed, range(9 - start))] == batches[start:]
    # Not the training loader's order: that one seeds epoch e with seed + e.
    training = torch.randperm(10, generator=torch.Generator().manual_seed(4)).tolist()
    assert batches[0] != training[:3]


def test_real_batch_streams_of_two_ranks_are_disjoint():
    ranks = [IndependentBatches(length=11, batch_size=2, seed=0, rank=r, world_size=2)
             for r in (0, 1)]
    first = [sum([b for b, _ in zip(stream, range(2))], []) for stream in ranks]
    assert len(first[0]) == len(first[1]) == 4 and not set(first[0]) & set(first[1])


def test_real_batch_loader_keeps_the_training_loaders_settings():
    dataset = [{"image": torch.full((3, 2, 2), float(i))} for i in range(8)]
    loader = DataLoader(dataset, batch_size=4)
    later = next(iter(real_batch_loader(loader, start=3)))
    expected = next(b for i, b in enumerate(real_batch_loader(loader)) if i == 3)
    assert later["image"].shape == (4, 3, 2, 2) and torch.equal(later["image"], expected["image"])
    whole = DataLoader([{"image": torch.zeros(2, 3, 2, 2)}], batch_size=None)  # items are batches
    assert next(iter(real_batch_loader(whole)))["image"].shape == (2, 3, 2, 2)
