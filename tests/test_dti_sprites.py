"""DTI-Sprites: selection, loss and decomposition on hand-built cases; schedules; every config."""

import importlib
import itertools
import math
from pathlib import Path

import pytest
import torch
import yaml

from objdecomp.cli import experiment_config_files, experiment_names
from objdecomp.compositing import composite, fixed_occlusion, add_background
from objdecomp.methods.dti_sprites import DTISprites, exhaustive_selection, greedy_selection
from objdecomp.methods.dti_sprites.networks import gaussian_window
from objdecomp.nn.backbones import MiniResNet

# training_step logs through Lightning; outside a Trainer that only warns.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")


def _square(size, top, left, side):
    mask = torch.zeros(1, size, size)
    mask[:, top : top + side, left : left + side] = 1
    return mask


def _candidates(b=2, size=8, k=3):
    """Layer 1's candidates are squares at the top left, layer 2's at the bottom right, each
    sprite k a distinct colour: the layers never overlap, so their choices are independent."""
    palette = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])[:k]
    colors = palette[None, None, :, :, None, None].expand(b, 2, k, 3, size, size)
    masks = torch.stack([_square(size, 0, 0, 3), _square(size, 4, 4, 3)])  # [2, 1, H, W]
    alphas = masks[None, :, None].expand(b, 2, k, 1, size, size)
    return colors, alphas


def test_greedy_equals_exhaustive_when_layers_do_not_interact():
    colors, alphas = _candidates()
    truth = torch.tensor([[0, 2, 1], [0, 0, 0]])  # background, layer 1, layer 2
    rows = torch.arange(2)
    layer_c = torch.stack([colors[rows, 0, truth[:, 1]], colors[rows, 1, truth[:, 2]]], 1)
    layer_a = torch.stack([alphas[rows, 0, truth[:, 1]], alphas[rows, 1, truth[:, 2]]], 1)
    background = torch.full((2, 1, 3, 8, 8), 0.3)
    occlusion = add_background(fixed_occlusion(2)).expand(2, -1, -1)
    images, _ = composite(torch.cat([background, layer_c], 1),
                          torch.cat([torch.ones_like(layer_a[:, :1]), layer_a], 1), occlusion)
    greedy = greedy_selection(images, colors, alphas, background, occlusion, iterations=1, empty=True)
    exhaustive = exhaustive_selection(images, colors, alphas, background, occlusion, empty=True)
    assert torch.equal(greedy, truth) and torch.equal(exhaustive, truth)


def test_exhaustive_is_the_brute_force_minimum():
    torch.manual_seed(0)
    b, k, size, penalty = 3, 3, 6, 0.01
    colors, alphas = torch.rand(b, 2, k, 3, size, size), torch.rand(b, 2, k, 1, size, size)
    backgrounds = torch.rand(b, 2, 3, size, size)
    occlusion = add_background(torch.rand(b, 2, 2).triu(1) + torch.rand(b, 2, 2).tril(-1))
    images = torch.rand(b, 3, size, size)
    ids = exhaustive_selection(images, colors, alphas, backgrounds, occlusion, empty=True, penalty=penalty)
    for i in range(b):
        best, best_ids = float("inf"), None
        for g, k1, k2 in itertools.product(range(2), range(k + 1), range(k + 1)):
            layers_c, layers_a = [backgrounds[i, g]], [torch.ones(1, size, size)]
            for layer, kk in ((0, k1), (1, k2)):
                layers_c.append(colors[i, layer, kk] if kk < k else torch.zeros(3, size, size))
                layers_a.append(alphas[i, layer, kk] if kk < k else torch.zeros(1, size, size))
            recon, _ = composite(torch.stack(layers_c)[None], torch.stack(layers_a)[None], occlusion[i : i + 1])
            value = (recon[0] - images[i]).square().mean() + penalty * ((k1 < k) + (k2 < k))
            if value < best:
                best, best_ids = value, [g, k1, k2]
        assert ids[i].tolist() == best_ids


def test_exhaustive_scores_sprites_and_the_empty_sprite_on_one_scale():
    """A red square at 0.4 where the last layer draws: the red sprite (1.0) costs more than an
    empty layer. (The exhaustive search once divided the sprites' errors by K, and drew it.)"""
    colors, alphas = _candidates(b=1)
    background = torch.zeros(1, 1, 3, 8, 8)
    images = torch.zeros(1, 3, 8, 8)
    images[:, 0, 4:7, 4:7] = 0.4
    occlusion = add_background(fixed_occlusion(2))[None]
    exhaustive = exhaustive_selection(images, colors, alphas, background, occlusion, empty=True)
    greedy = greedy_selection(images, colors, alphas, background, occlusion, empty=True)
    assert exhaustive.tolist() == greedy.tolist() == [[0, 3, 3]]


def test_greedy_prefers_empty_when_a_sprite_gains_less_than_lambda():
    colors, alphas = _candidates(b=1)
    background = torch.zeros(1, 1, 3, 8, 8)
    images = torch.zeros(1, 3, 8, 8)
    images[:, 0, :3, :3] = 0.02  # a faint red square: drawing the red sprite costs more than it explains
    occlusion = add_background(fixed_occlusion(2))[None]
    ids = greedy_selection(images, colors, alphas, background, occlusion, empty=True, penalty=1e-4)
    assert ids.tolist() == [[0, 3, 3]]
    ids = greedy_selection(images, colors, alphas, background, occlusion, empty=True, penalty=0.0)
    assert ids.tolist() == [[0, 3, 3]]  # even unpenalised, red at 1.0 is worse than nothing
    images[:, 0, :3, :3] = 1.0
    ids = greedy_selection(images, colors, alphas, background, occlusion, empty=True, penalty=1e-4)
    assert ids.tolist() == [[0, 0, 3]]


def _hand_built_model() -> DTISprites:
    """K = 2 sprites (a red and a green 4×4 square) over a grey background, no transformation."""
    model = DTISprites(image_size=8, channels=3, max_objects=1, num_classes=3, num_background=1,
                       num_backgrounds=1, sprite_transforms="", background_transforms="",
                       mask_noise=0.0, background_init=0.2, encoder="resnet8", encoder_pool=1)
    with torch.no_grad():
        model.net.sprites.masks.copy_(_square(8, 2, 2, 4).expand(2, 1, 8, 8))
        model.net.sprites.appearance.zero_()
        model.net.sprites.appearance[0, 0] = 1.0
        model.net.sprites.appearance[1, 1] = 1.0
    return model


def test_loss_and_decomposition_on_a_hand_built_case():
    model = _hand_built_model()
    square = _square(8, 2, 2, 4)
    images = torch.full((3, 3, 8, 8), 0.2)
    images[0] = torch.where(square.bool(), torch.tensor([1.0, 0, 0])[:, None, None], images[0])
    images[1] = torch.where(square.bool(), torch.tensor([0, 1.0, 0])[:, None, None], images[1])
    model.eval()
    with torch.no_grad():
        decomposition = model.checked_decompose(images)
    assert decomposition.classes.tolist() == [[0, 1], [0, 2], [0, 0]]  # red, green, empty
    assert decomposition.count.tolist() == [1, 1, 0]
    assert torch.allclose(decomposition.recon, images, atol=1e-6)
    assert torch.equal(decomposition.segmentation()[0], square[0].long())
    assert decomposition.background.tolist() == [True, False]
    model.train()
    model.frozen.fill_(False)
    loss = model.training_step({"image": images}, 0)
    assert loss.item() < 1e-10


def test_bf16_autocast_runs_the_encoder_in_bf16_and_rendering_in_float32():
    """What ``precision: bf16-mixed`` does to a step (the GPU path; emulated on this CPU)."""
    model = DTISprites(image_size=16, channels=3, max_objects=2, num_classes=3, num_backgrounds=1,
                       sprite_size=8, layer_transforms="col-pos", encoder="resnet8", encoder_pool=1)
    model.train()
    model.frozen.fill_(False)
    with torch.no_grad():  # identity-initialised (zero) heads would pass the encoder no gradient
        for sequence in model.net.sequences:
            for p in sequence.parameters():
                p.normal_(0, 1e-2)
    images = torch.rand(4, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = model.net.encoder(images)
        recon = model(images)[0]
        loss = model.training_step({"image": images}, 0)
    assert features.dtype == torch.bfloat16
    assert recon.dtype == loss.dtype == torch.float32
    loss.backward()
    grads = [p.grad for p in model.net.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_reassignment_copies_the_most_used_sprite():
    model = DTISprites(image_size=16, channels=3, max_objects=2, num_classes=5, sprite_size=8,
                       layer_transforms="col-pos", sprite_transforms="sim", encoder="resnet8")
    with torch.no_grad():
        model.net.sprites.appearance[2] = 0.3
        model.net.sprite_tsf.heads[0].weight3[1 * 4 + 2] = 0.5  # layer 1, sprite 2
    model.usage.copy_(torch.tensor([1, 50, 100, 30, 0]))
    assert model.reassign_rare_sprites() == [0]  # 1/100 < 0.2/4; 30/100 is not
    appearance, head = model.net.sprites.appearance, model.net.sprite_tsf.heads[0]
    assert torch.allclose(appearance[0], torch.full_like(appearance[0], 0.3), atol=1e-3)
    assert torch.equal(head.weight3[4 + 0], head.weight3[4 + 2])


def test_reassignment_threshold_is_the_raw_share_of_the_layers_without_the_empty_sprite():
    """#14 item 3 (C.2: "less than 20/K% of the images' layers"): sprite 0 holds 8 of 308 layers
    (2.6% < 0.2/4) but 8% of the most used sprite's count; only with the empty sprite does the
    authors' code compare with the most used sprite."""
    usage = torch.tensor([8, 100, 100, 100, 0])  # the last count: layers holding the empty sprite
    settings = dict(image_size=16, channels=3, max_objects=2, num_classes=5, sprite_size=8,
                    layer_transforms="col-pos", sprite_transforms="", encoder="resnet8")
    without_empty = DTISprites(**settings, empty_sprite=False)
    without_empty.usage.copy_(usage)
    assert without_empty.reassign_rare_sprites() == [0]
    with_empty = DTISprites(**settings, empty_sprite=True)
    with_empty.usage.copy_(usage)
    assert with_empty.reassign_rare_sprites() == []
    # C.2's text with the empty sprite: over all layers, the 92 empty ones too (8/400 = 2%).
    text = DTISprites(**settings, empty_sprite=True, reassign_share="layers")
    text.usage.copy_(torch.tensor([8, 100, 100, 100, 92]))
    assert text.reassign_rare_sprites() == [0]


@pytest.mark.parametrize("drop_sprites", [True, False])
def test_learning_rates_drop_tenfold_at_the_milestones(drop_sprites):
    model = DTISprites(image_size=8, channels=3, num_classes=3, sprite_transforms="",
                       background_transforms="", encoder="resnet8", milestones=[2, 5],
                       lr_drop_sprites=drop_sprites)
    sprites, networks = model.learning_rate_decays()
    assert [networks(0, e) for e in (0, 2, 4, 5)] == pytest.approx([1, 0.1, 0.1, 0.01])
    assert sprites(0, 5) == pytest.approx(0.01 if drop_sprites else 1.0)


def test_epoch_schedules_switch_modules_and_unfreeze_sprites_as_before():
    model = DTISprites(image_size=8, channels=3, num_classes=3, encoder="resnet8",
                       sprite_transforms="proj@3-tps@5", background_transforms="col-proj@2",
                       freeze_sprites_epochs=2)
    sprite, background = model.net.sprite_tsf, model.net.background_tsf
    # #14 item 1: "proj@3" is off until epoch 3 (the authors' sequences start with identity).
    assert [sprite.set_epoch(e) for e in (0, 2, 3, 4, 5)] == [0, 0, 1, 1, 2]
    assert [background.set_epoch(e) for e in (0, 1, 2)] == [1, 1, 2]
    assert [model.sprite_freeze(0, e) for e in (0, 1, 2, 3)] == [1, 1, 0, 0]
    assert bool(model.frozen)  # frozen from construction on, before the first epoch starts


# --- #14: what the authors' code does -----------------------------------------------------------
def _config_model(experiment: str, **changes) -> DTISprites:
    """The experiment's model with its datamodule's facts (class attributes: no data needed)."""
    config = _merged(experiment_config_files(experiment))
    module, _, name = config["data"]["class_path"].rpartition(".")
    data_class = getattr(importlib.import_module(module), name)
    facts = {k: getattr(data_class, k) for k in
             ("image_size", "channels", "max_objects", "num_classes", "num_background")}
    return DTISprites(**{**config["model"]["init_args"], **changes}, **facts)


def _initial_alpha(model: DTISprites) -> torch.Tensor:
    """``[H, W]`` the first sprite's alpha in the first layer, from freshly initialised heads."""
    model.eval()
    size = model.net.image_size
    with torch.no_grad():
        pred = model.net.predict(torch.rand(1, model.net.channels, size, size))
        return model.net.render(pred)[1][0, 0, 0, 0]


def _spread(profile: torch.Tensor) -> float:
    """Standard deviation in pixels of a non-negative 1-D profile."""
    x = torch.arange(len(profile), dtype=torch.float64)
    w = profile.double() / profile.sum()
    mean = (w * x).sum()
    return float((w * (x - mean) ** 2).sum().sqrt())


@pytest.mark.parametrize("experiment, footprint", [
    ("dti_sprites_tetrominoes", 17.5), ("dti_sprites_multi_dsprites", 32.0), ("dti_sprites_clevr6", 64.0)])
def test_paper_configs_start_sprites_over_half_the_canvas_as_the_authors(experiment, footprint):
    """#14 item 4: with θ = (1 + e^s)·I + t a sprite first covers half the canvas, so its mask
    std in pixels is the configured std scaled by footprint / sprite size (3.6, 8, 16 px)."""
    model = _config_model(experiment)
    sprite = model.net.sprite_size
    native = gaussian_window(sprite, sprite, model.hparams.mask_std)
    expected = _spread(native.sum(0)) * footprint / sprite
    assert _spread(_initial_alpha(model).sum(0)) == pytest.approx(expected, rel=0.05)


def test_no_shared_transformation_ablation_starts_like_the_full_model():
    """#14 item 5: Table 2's sprite-level col-pos places the sprite as the layer-level one does."""
    full = _initial_alpha(_config_model("dti_sprites_tetrominoes"))
    ablation = _initial_alpha(_config_model("dti_sprites_tetrominoes_no_shared_transform"))
    assert torch.allclose(ablation, full, atol=1e-5)
    native_full = _initial_alpha(_config_model("dti_sprites_tetrominoes", position="native_size"))
    native_ablation = _initial_alpha(_config_model("dti_sprites_tetrominoes_no_shared_transform",
                                                   position="native_size"))
    assert torch.allclose(native_ablation, native_full, atol=1e-5)


def _two_translucent_layers(evaluation_labels: str) -> DTISprites:
    """L = 2 layers that must both hold the one sprite, whose mask is 0.4 everywhere."""
    model = DTISprites(image_size=8, channels=3, max_objects=2, num_classes=2, num_backgrounds=1,
                       sprite_transforms="", background_transforms="", occlusion="fixed",
                       empty_sprite=False, mask_noise=0.0, background_init=0.2, encoder="resnet8",
                       evaluation_labels=evaluation_labels)
    with torch.no_grad():
        model.net.sprites.masks.fill_(0.4)
    return model.eval()


def test_evaluation_labels_follow_the_authors_frontmost_mask_rule():
    """#14 item 8: visible weights 0.4 (front), 0.24 (behind), 0.36 (background): the largest is
    the front layer, but no mask exceeds 0.5, so the authors label every pixel background."""
    images = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        authors = _two_translucent_layers("frontmost_mask").checked_decompose(images)
        weights = _two_translucent_layers("visible_weight").checked_decompose(images)
    assert (authors.segmentation() == 0).all() and (weights.segmentation() == 2).all()
    assert set(authors.masks.unique().tolist()) == {0.0, 1.0}


def test_authors_labels_select_sprites_with_the_predicted_occlusion():
    """#14 item 8: only the labels binarise the occlusion; the selection reads the predicted one."""
    settings = dict(image_size=8, channels=3, max_objects=2, num_classes=3, sprite_transforms="",
                    background_transforms="", encoder="resnet8")
    images = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        _, soft, _ = DTISprites(**settings, evaluation_labels="frontmost_mask").eval().infer(images)
        _, hard, _ = DTISprites(**settings, evaluation_labels="visible_weight").eval().infer(images)
    assert torch.allclose(soft[0, 1:, 1:], torch.tensor([[0.0, 0.5], [0.5, 0.0]]))  # sigmoid(0)
    assert torch.equal(hard[0, 1:, 1:], torch.zeros(2, 2))


def test_exhaustive_selection_leaves_lambda_out_as_the_authors_code():
    """#14 item 9: a faint red square gains less than λ = 0.01 from the red sprite; the authors'
    exhaustive search draws it anyway, Eq. 5 as written (penalize_exhaustive) does not."""
    images = torch.zeros(1, 3, 8, 8)
    images[:, 0, 2:6, 2:6] = 0.51
    classes = []
    for penalize in (False, True):
        model = _hand_built_model_with(selection="exhaustive", empty_penalty=0.01,
                                       background_init=0.0, penalize_exhaustive=penalize)
        with torch.no_grad():
            classes.append(model.eval().checked_decompose(images).classes[0, 1].item())
    assert classes == [1, 0]  # red sprite without λ, empty sprite with it


def _hand_built_model_with(**changes) -> DTISprites:
    settings = dict(image_size=8, channels=3, max_objects=1, num_classes=3, num_background=1,
                    num_backgrounds=1, sprite_transforms="", background_transforms="",
                    mask_noise=0.0, background_init=0.2, encoder="resnet8", encoder_pool=1)
    model = DTISprites(**{**settings, **changes})
    with torch.no_grad():
        model.net.sprites.masks.copy_(_square(8, 2, 2, 4).expand(2, 1, 8, 8))
        model.net.sprites.appearance.zero_()
        model.net.sprites.appearance[0, 0] = 1.0
        model.net.sprites.appearance[1, 1] = 1.0
    return model


def test_mini_resnet_starts_with_he_fan_in_normal_weights():
    """#14 item 9: the authors' mini ResNet uses kaiming_normal_'s default (fan-in) mode."""
    torch.manual_seed(0)
    stem = MiniResNet(3, depth=32).stem[0].weight  # 16 x 3 x 3 x 3: fan-in 27, fan-out 144
    assert stem.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.1)


DTI_TABLE_CONFIGS = [name for name in experiment_names()
                     if name.startswith("dti_sprites_") and "/" not in name]


@pytest.mark.parametrize("experiment", DTI_TABLE_CONFIGS)
def test_dti_configs_keep_the_last_partial_batch_as_the_authors_loader(experiment):
    """#14 item 9: step counts equal the authors' (Weizmann Horse: 11 steps of 328 images per
    epoch, 165k in 15,000 epochs, not 150k)."""
    assert _merged(experiment_config_files(experiment))["data"]["init_args"]["drop_last"] is False


def test_a_datamodule_without_drop_last_trains_on_the_partial_batch():
    from datamodules.tetrominoes import TetrominoesDataModule

    loaders = []
    for drop_last in (True, False):
        datamodule = TetrominoesDataModule(train_size=100, val_size=4, test_size=4, batch_size=32,
                                           drop_last=drop_last)
        datamodule.setup("fit")
        loaders.append(len(datamodule.train_dataloader()))
    assert loaders == [3, 4]
    assert math.ceil(328 / 32) * 15000 == 165_000  # the authors' Horse steps with the partial batch


def test_table_1_configs_read_dti_data_and_procedural_runs_are_named_variants():
    """#14 item 6: Table 1 on DeepMind's records (DTI's first 60k; CLEVR6: the authors' 34,963),
    scored on the first 320 training images; our procedural scenes only in named variants."""
    import inspect

    from datamodules.deepmind import DeepMindDataModule

    table = {"dti_sprites_tetrominoes": ("DeepMindTetrominoesDataModule", "deepmind"),
             "dti_sprites_multi_dsprites": ("DeepMindMultiDSpritesDataModule", "deepmind"),
             "dti_sprites_clevr6": ("CLEVR6DataModule", "dti")}
    for experiment, (data_class, source) in table.items():
        data = _merged(experiment_config_files(experiment))["data"]
        assert data["class_path"] == f"datamodules.deepmind.{data_class}"
        assert data["init_args"]["source"] == source and "test_size" not in data["init_args"]
    assert inspect.signature(DeepMindDataModule).parameters["test_size"].default == 320
    procedural = ["dti_sprites_tetrominoes_procedural", "dti_sprites_multi_dsprites_procedural",
                  "quick/dti_sprites_tetrominoes", "quick/dti_sprites_multi_dsprites"]
    for experiment in procedural:
        path = _merged(experiment_config_files(experiment))["data"]["class_path"]
        assert path.split(".")[1] in ("tetrominoes", "multi_dsprites"), (experiment, path)


# --- slow tier: every DTI experiment config trains a few steps and decomposes -------------------
EXPERIMENTS_OF_DTI = [name for name in experiment_names() if "dti_sprites_" in name]


def _merged(files) -> dict:
    """The config files of an experiment merged as the CLI reads them (the last wins)."""
    def merge(base: dict, update: dict) -> dict:
        both = {k for k, v in update.items() if isinstance(v, dict) and isinstance(base.get(k), dict)}
        return {**base, **update, **{k: merge(base[k], update[k]) for k in both}}
    config: dict = {}
    for path in files:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS_OF_DTI)
def test_experiment_config_trains_on_tiny_data(experiment: str):
    """The config's model, with its datamodule's facts (class attributes: no data needed) and
    every curriculum module on, takes two optimiser steps on random images of the dataset's
    size and decomposes them (the CLI runs of the slow tier stop before late curricula)."""
    config = _merged(experiment_config_files(experiment))
    module, _, name = config["data"]["class_path"].rpartition(".")
    data_class = getattr(importlib.import_module(module), name)
    facts = {k: getattr(data_class, k) for k in
             ("image_size", "channels", "max_objects", "num_classes", "num_background")}
    model = DTISprites(**config["model"]["init_args"], **facts)
    for sequence in model.net.sequences:
        sequence.set_epoch(10**6)  # every curriculum module on
    model.frozen.fill_(False)
    optimizer = model.configure_optimizers()["optimizer"]
    images = torch.rand(2, facts["channels"], facts["image_size"], facts["image_size"])
    model.train()
    for _ in range(2):
        loss = model.training_step({"image": images}, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        decomposition = model.checked_decompose(images)
    assert decomposition.num_components == model.net.num_layers + 1
    assert set(model.pictures({"image": images}, decomposition)) >= {"sprites", "figure"}


# --- editing (Fig. 4) ---------------------------------------------------------------------------
def _positioned_model(position: str = "native_size") -> DTISprites:
    """Sprite 0 a red 4x4 square, sprite 1 a green one, drawn at native size by ``col-pos`` (the
    8x8 sprite at zero parameters covers the central half of the 16x16 canvas in both forms)."""
    model = DTISprites(image_size=16, channels=3, max_objects=1, num_classes=3, num_backgrounds=1,
                       sprite_size=8, layer_transforms="col-pos", sprite_transforms="",
                       background_transforms="", background_init=0.0, mask_noise=0.0,
                       encoder="resnet8", empty_sprite=False, position=position)
    with torch.no_grad():
        model.net.sprites.masks.copy_(_square(8, 2, 2, 4).expand(2, 1, 8, 8))
        model.net.sprites.appearance.zero_()
        model.net.sprites.appearance[0, 0] = 1.0
        model.net.sprites.appearance[1, 1] = 1.0
    return model.eval()


@pytest.mark.parametrize("position", ["native_size", "half_canvas"])
def test_editing_swaps_moves_rescales_and_recolours(position):
    from objdecomp.methods.dti_sprites.editing import Edit, edit_image

    model = _positioned_model(position)
    image = torch.zeros(3, 16, 16)
    image[0, 6:10, 6:10] = 1.0  # the red square, centred, as the model draws it
    reconstruction, swapped = edit_image(model, image, [Edit(layer=1, sprite=1)])
    assert torch.allclose(reconstruction, image, atol=1e-5)
    assert torch.allclose(swapped[[1, 0]], image[[0, 1]], atol=1e-5)  # now green
    _, moved = edit_image(model, image, [Edit(layer=1, translate=(0.25, 0.0))])
    assert torch.allclose(moved[:, :, 4:], image[:, :, :12], atol=1e-5)  # 4 pixels to the right
    _, bigger = edit_image(model, image, [Edit(layer=1, scale=1.5)])  # 4 -> 6 pixels, same centre
    assert bigger[0, 6:10, 6:10].min() > 0.99 and bigger[0, :4].max() < 1e-6
    assert 2.0 < float(bigger[0].sum() / image[0].sum()) < 2.5
    _, moved_and_bigger = edit_image(model, image, [Edit(layer=1, scale=1.5, translate=(0.25, 0.0))])
    assert torch.allclose(moved_and_bigger[:, :, 4:], bigger[:, :, :12], atol=1e-5)
    _, recoloured = edit_image(model, image, [Edit(layer=1, color=(0.2, 0.6, 1.0))])
    assert torch.allclose(recoloured[:, 8, 8], torch.tensor([0.2, 0.6, 1.0]), atol=1e-4)


@pytest.mark.parametrize("position", ["native_size", "half_canvas"])
def test_describe_reads_the_frame_in_either_parameterisation(position):
    from objdecomp.methods.dti_sprites.editing import describe

    image = torch.zeros(3, 16, 16)
    image[0, 6:10, 6:10] = 1.0
    assert describe(_positioned_model(position), image) == [
        "layer 1: sprite 0, centre (0.50, 0.50), frame 0.50 of the image width"]


def test_the_authors_pos_refuses_a_frame_beyond_the_canvas():
    from objdecomp.methods.dti_sprites.editing import Edit, edit_image

    with pytest.raises(ValueError, match="frame smaller than the image"):
        edit_image(_positioned_model("half_canvas"), torch.zeros(3, 16, 16), [Edit(layer=1, scale=3.0)])


def test_edit_command_writes_the_edited_image(tmp_path):
    import pytorch_lightning as pl
    from torchvision.utils import save_image

    from objdecomp.methods.dti_sprites.editing import main

    model = _positioned_model()
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": pl.__version__}, checkpoint)
    image = torch.zeros(3, 16, 16)
    image[0, 6:10, 6:10] = 1.0
    save_image(image, tmp_path / "in.png")
    assert main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "in.png"),
                 "--output", str(tmp_path / "out.png"), "--layer", "1", "--sprite", "1"]) == 0
    from PIL import Image
    out = torch.tensor(list(Image.open(tmp_path / "out.png").getdata())).view(16, 16, 3)
    assert out[8, 8].tolist() == [0, 255, 0] and out[0, 0].tolist() == [0, 0, 0]
