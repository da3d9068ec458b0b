"""PerturbGAN: the perturbations of Eq. 2, the losses of Eqs. 3-4, progressive growing as a
schedule (and its resume), the stage-two encoder and the LSUN lmdb loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from datamodules.lsun import LSUNDataModule
from datamodules.paths import DatasetNotFoundError
from objdecomp.compositing import over
from objdecomp.methods.perturbgan import Layers, PerturbGAN, ProgressiveGrowing
from objdecomp.methods.perturbgan.growing import Phase
from objdecomp.methods.perturbgan.module import binarisation, size_hinge
from objdecomp.methods.perturbgan.perturbation import (contrast_jitter, random_shifts,
                                                       resize_and_crop, shift_images)
from tests.fixtures.lsun import grey_of, write_lsun
from tests.test_methods import PERTURBGAN_TINY, squares

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no",
                                        "ignore:PerturbGAN stage 'encoder' without")


# --- Eq. 2: the shift -------------------------------------------------------------------------
def test_shift_images_moves_each_image_by_its_own_shift_with_zero_fill():
    images = torch.zeros(2, 1, 5, 5)
    images[:, 0, 2, 2] = 1.0
    images[:, 0, 0, 0] = 2.0
    out = shift_images(images, torch.tensor([[1, 0], [-2, 1]]))  # (dx, dy)
    assert out[0, 0, 2, 3] == 1 and out[0, 0, 0, 1] == 2 and out[0].sum() == 3
    assert out[1, 0, 3, 0] == 1 and out[1].sum() == 1  # the corner pixel left the image


def test_random_shifts_cover_the_range_and_stay_inside_it():
    torch.manual_seed(0)
    shifts = random_shifts(4000, 0.125 * 32)
    assert shifts.abs().max() == 4 and shifts.min() == -4
    assert set(shifts.unique().tolist()) == set(range(-4, 5))
    assert not random_shifts(10, 0.0).any()


def _module(**overrides) -> PerturbGAN:
    torch.manual_seed(0)
    return PerturbGAN(**{**PERTURBGAN_TINY, **overrides})


def test_composite_moves_foreground_and_mask_together_and_never_the_background():
    model = _module(shift=0.25)  # up to 4 pixels at 16 px
    torch.manual_seed(3)
    b, s = 64, 16
    background = torch.rand(b, 3, s, s)
    mask = torch.zeros(b, 1, s, s)
    mask[:, :, 6:10, 5:11] = 1.0
    # the foreground's first channel carries the mask's pattern, so a different shift shows
    foreground = torch.cat([mask * 0.5 + 0.25, torch.rand(b, 2, s, s)], dim=1)
    phase = Phase(16, 1.0, b, 1e-3, 0, 1)
    composite, moved_mask = model.composite(Layers(background, foreground, mask), phase)
    moved = 0
    for i in range(b):
        found = [(dx, dy) for dx in range(-4, 5) for dy in range(-4, 5)
                 if torch.equal(shift_images(mask[i:i + 1], torch.tensor([[dx, dy]]))[0], moved_mask[i])]
        assert len(found) == 1, "the moved mask is a shift of the mask"
        delta = torch.tensor([found[0]])
        fg = shift_images(foreground[i:i + 1], delta)[0]
        assert torch.allclose(composite[i], over(fg, moved_mask[i], background[i]))
        outside = moved_mask[i, 0] == 0
        assert torch.equal(composite[i][:, outside], background[i][:, outside])  # unmoved
        moved += found[0] != (0, 0)
    assert moved > b // 2


def test_no_shift_leaves_the_mask_in_place():
    model = _module(shift=0.0)
    layers = Layers(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16), torch.rand(4, 1, 16, 16))
    _, mask = model.composite(layers, Phase(16, 1.0, 4, 1e-3, 0, 1))
    assert torch.equal(mask, layers.mask)


def test_contrast_jitter_scales_around_the_channel_mean_within_the_channel_range():
    torch.manual_seed(0)
    images = torch.rand(16, 3, 8, 8)
    same = contrast_jitter(images, 1.0, 1.0)
    assert torch.allclose(same, images, atol=1e-6)
    jittered = contrast_jitter(images, 0.7, 1.3)
    assert (jittered.amin(dim=(2, 3)) >= images.amin(dim=(2, 3)) - 1e-6).all()
    assert (jittered.amax(dim=(2, 3)) <= images.amax(dim=(2, 3)) + 1e-6).all()
    flat = torch.full((2, 3, 4, 4), 0.3)
    assert torch.equal(contrast_jitter(flat, 0.7, 1.3), flat)
    weaker = contrast_jitter(images, 0.5, 0.5)  # no clamping when contrast shrinks
    assert torch.allclose(weaker.mean(dim=(2, 3)), images.mean(dim=(2, 3)), atol=1e-5)


def test_real_images_are_resized_to_1_125_resolution_and_randomly_cropped():
    torch.manual_seed(0)
    images = torch.rand(32, 3, 64, 64)
    crops = resize_and_crop(images, 32, 1.125, random_crop=True)
    assert crops.shape == (32, 3, 32, 32)
    resized = F.interpolate(images, size=(36, 36), mode="bilinear", antialias=True, align_corners=False)
    offsets = set()
    for i in range(32):
        hits = [(y, x) for y in range(5) for x in range(5)
                if torch.allclose(resized[i, :, y:y + 32, x:x + 32], crops[i])]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 5
    plain = resize_and_crop(images, 32, 1.125, random_crop=False)
    assert torch.allclose(plain, F.interpolate(images, size=(32, 32), mode="bilinear",
                                               antialias=True, align_corners=False))


# --- Eqs. 3-4 -----------------------------------------------------------------------------------
def test_size_hinge_and_binarisation_on_hand_built_masks():
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :2] = 1.0  # 50% of image 0; image 1 empty
    assert size_hinge(mask, 0.25).item() == pytest.approx((0 + 0.25) / 2)
    assert binarisation(mask).item() == 0
    assert binarisation(torch.full((1, 1, 2, 2), 0.3)).item() == pytest.approx(0.3)


# --- progressive growing -----------------------------------------------------------------------
GROWING = ProgressiveGrowing([8, 16, 32], [4, 2, 1], [1.0, 2.0, 3.0], fade_images=8, stable_images=8)


@pytest.mark.parametrize("batch, resolution, alpha, size, lr, images", [
    (0, 8, 1.0, 4, 1.0, 0), (3, 8, 1.0, 4, 1.0, 12),                    # 8 px: 16 images = 4 batches
    (4, 16, 1 / 8, 2, 2.0, 16), (7, 16, 7 / 8, 2, 2.0, 22),             # fade to 16: 4 batches of 2
    (8, 16, 1.0, 2, 2.0, 24), (11, 16, 1.0, 2, 2.0, 30),                # 16 px stable
    (12, 32, 1 / 8, 1, 3.0, 32), (19, 32, 1.0, 1, 3.0, 39),             # fade to 32: 8 batches of 1
    (20, 32, 1.0, 1, 3.0, 40), (1000, 32, 1.0, 1, 3.0, 1020)])          # 32 px from then on
def test_growing_changes_resolution_batch_and_lr_at_the_right_image_counts(
        batch, resolution, alpha, size, lr, images):
    phase = GROWING.at(batch)
    assert (phase.resolution, phase.batch_size, phase.lr, phase.images) == (resolution, size, lr, images)
    assert phase.alpha == pytest.approx(alpha)
    assert GROWING.batches_until(32) == 12


def test_paper_growing_spends_1_2m_images_per_scale():
    """§4: 1.2M real images per scale (600k of fade-in from 16 px on), ~108k iterations."""
    paper = ProgressiveGrowing([8, 16, 32, 64, 128], [256, 128, 64, 32, 32],
                               [1e-3] * 4 + [1.5e-3], 600_000, 600_000)
    for images, resolution, lr in ((1_199_872, 8, 1e-3), (1_200_128, 16, 1e-3),
                                   (4_800_224, 64, 1e-3), (4_800_256, 128, 1.5e-3)):  # ceil per phase
        phase = paper.at(paper.batches_until(images))
        assert (phase.resolution, phase.lr) == (resolution, lr), images
    end = paper.batches_until(6_000_000)
    assert 107_000 < end < 109_000 and paper.at(end).alpha == 1.0


class PhaseRecorder(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        phase = pl_module.phase()
        self.seen.append((pl_module.batch_step, phase))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        optimizers = pl_module.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        lrs = [g["lr"] for o in optimizers for g in o.param_groups]
        self.seen[-1] = (*self.seen[-1], lrs)


def _fit(model, steps, folder, ckpt_path=None):
    recorder = PhaseRecorder()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         default_root_dir=folder, callbacks=[recorder])
    trainer.fit(model, train_dataloaders=DataLoader([squares(4)] * 20, batch_size=None),
                ckpt_path=ckpt_path)
    return trainer, recorder


def test_resume_mid_stage_restores_resolution_batch_size_lr_and_alpha(tmp_path: Path):
    growing = dict(resolutions=[8, 16], batch_sizes=[4, 2], learning_rates=[1e-3, 2e-3],
                   fade_images=8, stable_images=0)  # 8 px: 2 batches, then a 4-batch fade
    trainer, first = _fit(_module(**growing), 2 * 3, tmp_path)  # 3 batches: D + G steps each
    checkpoint = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(checkpoint)
    assert first.seen[-1][1].resolution == 16 and first.seen[-1][1].alpha == pytest.approx(1 / 8)
    _, resumed = _fit(_module(**growing), 2 * 5, tmp_path, ckpt_path=str(checkpoint))
    batch, phase, lrs = resumed.seen[0]
    schedule = ProgressiveGrowing(**growing)
    assert batch == 3 and phase == schedule.at(3)
    assert (phase.resolution, phase.batch_size, phase.alpha) == (16, 2, pytest.approx(3 / 8))
    assert lrs == [2e-3, 2e-3]


# --- generators, EMA, encoder ------------------------------------------------------------------
def test_two_generators_read_the_same_z_with_their_own_mapping_and_single_has_seven_outputs():
    two, single = _module(), _module(generators="single")
    assert len(two.generator.nets) == 2 and len(single.generator.nets) == 1
    heads = single.generator.nets[0].synthesis.heads
    assert all(h.weight.shape[0] == 7 for h in heads.values())
    z = torch.randn(3, 8)
    with torch.no_grad():
        layers = two.generator(z)
    assert layers.background.shape == (3, 3, 16, 16) and layers.mask.shape == (3, 1, 16, 16)
    assert 0 <= layers.mask.min() and layers.mask.max() <= 1
    assert two.generator.num_styles == 2 * 2 * 3  # 2 generators x 3 blocks (4, 8, 16) x 2 AdaIN


def test_ema_generator_moves_towards_the_trained_one(tmp_path: Path):
    model = _module(ema_decay=0.9)
    before = [p.clone() for p in model.generator_ema.parameters()]
    _fit(model, 2, tmp_path)
    for ema, live, old in zip(model.generator_ema.parameters(), model.generator.parameters(), before):
        assert torch.allclose(ema, 0.9 * old + 0.1 * live, atol=1e-6)


def test_encoder_stage_trains_only_the_encoder_and_decodes_through_the_frozen_generator(tmp_path):
    model = _module(stage="encoder")
    frozen = {n: p.clone() for n, p in model.named_parameters() if not n.startswith("encoder.")}
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    encoder_before = model.encoder.linear.weight.clone()
    _fit(model, 2, tmp_path)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(model.encoder.linear.weight, encoder_before)


def test_encoder_outputs_one_style_per_adain_input_of_both_generators():
    model = _module(stage="encoder")
    styles = model.encoder(torch.rand(2, 3, 16, 16) * 2 - 1, model.generator_ema.mean_styles())
    assert styles.shape == (2, model.generator.num_styles, 8)


def test_per_chunk_encoding_fits_a_fresh_encoder_inside_evaluation():
    model = _module(stage="encoder", chunk_size=4, chunk_iterations=2).eval()
    encoder_before = model.encoder.linear.weight.clone()
    with torch.inference_mode():
        decomposition = model.checked_decompose(squares(4)["image"])
    assert decomposition.masks.shape == (4, 2, 16, 16)
    assert torch.equal(model.encoder.linear.weight, encoder_before)  # the module's E is untouched
    assert model.encoder.linear.weight.requires_grad  # requires_grad restored after fitting


def test_decompose_binarises_at_one_half_through_the_object_component():
    model = _module(stage="encoder").eval()
    with torch.no_grad():
        decomposition = model.checked_decompose(squares(2)["image"])
    assert decomposition.background.tolist() == [True, False]
    segmentation = decomposition.segmentation()
    assert torch.equal(segmentation == 1, decomposition.masks[:, 1] > 0.5)


# --- LSUN lmdb ------------------------------------------------------------------------------------
def test_lsun_reads_the_first_images_in_cursor_order_squashed(tmp_path: Path):
    records = write_lsun(tmp_path, "car", [10, 60, 110, 160, 210])
    data = LSUNDataModule("car", root=str(tmp_path), image_size=16, max_images=4, eval_images=2,
                          batch_size=2)
    train = data.make_dataset("train")
    assert len(train) == 4 and len(data.make_dataset("test")) == 2
    item = train[0]
    assert set(item) == {"image"} and item["image"].shape == (3, 16, 16)  # 48x64 squashed
    assert [k for _, k in data.records()] == [k for k, _ in records[:4]]
    greys = grey_of(torch.stack([train[i]["image"] for i in range(4)]))
    assert greys == [v for _, v in records[:4]]


def test_lsun_mix_interleaves_categories_and_reads_webp(tmp_path: Path):
    write_lsun(tmp_path, "car", [10, 20, 30])
    write_lsun(tmp_path, "horse", [200, 210, 220], kind="WEBP")
    data = LSUNDataModule("car+horse", root=str(tmp_path), image_size=8, max_images=3)
    greys = grey_of(torch.stack([data.make_dataset("train")[i]["image"] for i in range(6)]))
    assert [g < 100 for g in greys] == [True, False] * 3


def test_lsun_missing_database_names_where_it_looked(tmp_path: Path):
    data = LSUNDataModule("bird", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="bird_lmdb"):
        data.make_dataset("train")
    with pytest.raises(ValueError, match="unknown LSUN"):
        LSUNDataModule("spaceship")


def test_plain_generator_is_the_single_output_gan_of_table_3():
    model = _module(generators="plain", shift=0.0)
    with torch.no_grad():
        layers = model.generator(torch.randn(2, 8))
    assert torch.equal(layers.background, layers.foreground) and (layers.mask == 1).all()
    composite, _ = model.composite(layers, Phase(16, 1.0, 2, 1e-3, 0, 0))
    assert torch.equal(composite, layers.background)


def test_lsun_reads_a_database_unpacked_without_the_lmdb_suffix(tmp_path: Path):
    write_lsun(tmp_path, "chair", [30, 90])
    (tmp_path / "chair_lmdb").rename(tmp_path / "chair")
    data = LSUNDataModule("chair", root=str(tmp_path), image_size=8)
    assert len(data.make_dataset("train")) == 2


# --- Table 2's baselines -----------------------------------------------------------------------
def test_full_image_mask_and_grabcut_baselines():
    from objdecomp.methods.perturbgan.baselines import FullImageMask, GrabCut

    images = torch.zeros(2, 3, 32, 32)
    images[:, 0] = 0.1 + 0.05 * torch.rand(2, 32, 32)  # dark red noisy background
    images[:, :, 10:22, 12:24] = torch.tensor([0.1, 0.9, 0.2])[:, None, None]  # green object
    truth = torch.zeros(2, 32, 32, dtype=torch.bool)
    truth[:, 10:22, 12:24] = True
    full = FullImageMask(image_size=32).checked_decompose(images)
    assert (full.segmentation() == 1).all()
    found = GrabCut(image_size=32).checked_decompose(images).segmentation() == 1
    iou = (found & truth).sum() / (found | truth).sum()
    assert iou > 0.8


def test_a_baseline_run_writes_results_that_table_2_counts(tmp_path, monkeypatch, capsys):
    from objdecomp.methods.perturbgan.baselines import main
    from objdecomp.tables import collect

    monkeypatch.setenv("OBJDECOMP_RESULTS", str(tmp_path))
    main(["--exp", "quick/perturbgan_textured_shape", "--baseline", "full", "--data", "test_size=8"])
    assert "full on quick/perturbgan_textured_shape (test): " in capsys.readouterr().out
    runs = collect(tmp_path)["perturbgan_textured_shape_full"]  # <experiment>_<baseline>
    assert len(runs) == 1 and 0 < runs[0]["test/fg_iou"] < 1


def test_testing_after_fitting_keeps_the_trained_encoder_and_a_fresh_test_loads_stage_one(tmp_path):
    trainer, _ = _fit(_module(), 2, tmp_path)  # stage one
    stage_one = tmp_path / "stage_one.ckpt"
    trainer.save_checkpoint(stage_one)
    model = _module(stage="encoder", init_checkpoint=str(stage_one))
    trainer, _ = _fit(model, 2, tmp_path)
    trained = model.encoder.linear.weight.clone()
    trainer.test(model, dataloaders=DataLoader([squares(4)], batch_size=None), verbose=False)
    assert torch.equal(model.encoder.linear.weight, trained)
    fresh = _module(stage="encoder", init_checkpoint=str(stage_one))
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False).test(
        fresh, dataloaders=DataLoader([squares(4)], batch_size=None), verbose=False)
    generator = torch.load(stage_one, weights_only=False)["state_dict"]["generator_ema.nets.0.mapping.layers.0.weight"]
    assert torch.equal(fresh.generator_ema.nets[0].mapping.layers[0].weight, generator)


# --- stage one's evaluation on generated scenes (Tables 1 and 3) ------------------------------
class FixedDetector:
    """Stands in for Mask R-CNN: per image, the detections it is given (checked at 128 px)."""

    def __init__(self, detections):
        self.detections, self.sizes = detections, []

    def __call__(self, images):
        self.sizes += [tuple(image.shape) for image in images]
        return self.detections[:len(images)]


def detection(label, score, mask):
    return {"labels": torch.tensor([label]), "scores": torch.tensor([score]),
            "masks": mask[None, None].float()}


def test_generated_masks_are_scored_against_the_best_detection_of_the_category_only():
    from objdecomp.methods.perturbgan.evaluation import DetectedMaskIoU

    car = torch.zeros(128, 128)
    car[:, :64] = 1  # the left half
    detector = FixedDetector([detection(3, 0.9, car),          # a car: scored
                              detection(1, 0.99, car),         # a person: not the category
                              detection(3, 0.3, car)])         # a car below the threshold
    metric = DetectedMaskIoU(detector, category=3)
    generated = torch.zeros(3, 1, 64, 64)
    generated[:, :, :, :16] = 1  # the left quarter: IoU 0.5 with the left half
    metric.update(torch.rand(3, 3, 64, 64), generated)
    assert detector.sizes == [(3, 128, 128)] * 3, "64x64 composites go to the detector at 128x128"
    result = metric.compute()
    assert result["miou"].item() == pytest.approx(0.5, abs=0.02)
    assert result["detected"].item() == pytest.approx(1 / 3)


def test_mask_rcnn_is_torchvisions_detection_api_and_its_masks_are_read():
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from objdecomp.methods.perturbgan.evaluation import DetectedMaskIoU, coco_category

    torch.manual_seed(0)
    detector = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                     min_size=128, max_size=128).eval()  # random weights: the plumbing
    metric = DetectedMaskIoU(detector, category=coco_category("car"), score_threshold=0.0)
    metric.update(torch.rand(2, 3, 64, 64), torch.ones(2, 1, 64, 64))
    assert metric.images.item() == 2 and 0 <= metric.compute()["miou"].item() <= 1
    assert coco_category("car") == 3


def test_missing_weights_are_an_error_naming_the_option_and_the_source(tmp_path):
    from objdecomp.methods.perturbgan.evaluation import coco_mask_rcnn, frechet_inception_distance

    with pytest.raises(RuntimeError, match="maskrcnn_resnet50_fpn_coco.*detector_weights"):
        coco_mask_rcnn(str(tmp_path / "missing.pth"))
    with pytest.raises(RuntimeError, match="pt_inception-2015-12-05.*inception_weights"):
        frechet_inception_distance(str(tmp_path / "missing.pth"))


def test_stage_one_test_logs_table_1_and_3_metrics_of_generated_scenes(monkeypatch):
    from torchmetrics.image.fid import FrechetInceptionDistance

    from objdecomp.methods.perturbgan import evaluation

    everything = torch.ones(128, 128)
    monkeypatch.setattr(evaluation, "coco_mask_rcnn",
                        lambda weights: FixedDetector([detection(3, 0.9, everything)] * 8))
    features = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())  # 12-d stand-in
    features.num_features = 12
    monkeypatch.setattr(evaluation, "frechet_inception_distance",
                        lambda weights: FrechetInceptionDistance(feature=features, normalize=True))
    model = _module(generated_metrics=["maskrcnn", "fid"])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.test(model, dataloaders=DataLoader([squares(8)], batch_size=None), verbose=False)
    logged = trainer.callback_metrics
    assert logged["test/maskrcnn_detected"].item() == 1.0
    assert 0 < logged["test/maskrcnn_miou"].item() <= 1  # the generated masks against the whole image
    assert torch.isfinite(logged["test/fid"]) and "detector" not in str(model.state_dict().keys())


def test_the_single_output_gan_cannot_be_scored_against_mask_rcnn():
    with pytest.raises(ValueError, match="generates no mask"):
        _module(generators="plain", generated_metrics=["maskrcnn"])
    with pytest.raises(ValueError, match="unknown"):
        _module(generated_metrics=["inception_score"])


def test_annotated_lsun_images_carry_mask_rcnn_masks_all_or_only_where_detected(tmp_path: Path):
    from datamodules.lsun import pseudo_mask_folder, save_pseudo_masks
    from datamodules.real_data import CorruptFileError
    from objdecomp.methods.perturbgan.evaluation import annotate

    records = write_lsun(tmp_path, "car", [20, 200, 40, 220, 240])  # bright images hold a "car"
    cars = [value > 128 for _, value in records[:4]]  # the first 4 in cursor order are evaluated
    with pytest.raises(DatasetNotFoundError, match="evaluation annotate --category car"):
        LSUNDataModule("car", root=str(tmp_path), eval_images=4, pseudo_masks="all").make_dataset("test")

    def detector(images):
        left_half = torch.zeros(images[0].shape[1:])
        left_half[:, :images[0].shape[-1] // 2] = 1
        return [detection(3 if image.mean() > 0.5 else 1, 0.9, left_half) for image in images]

    assert annotate("car", str(tmp_path), 4, detector, batch_size=3, size=16, log=lambda _: None) \
        == {"images": 4, "detected": sum(cars)}
    everything = LSUNDataModule("car", root=str(tmp_path), image_size=8, eval_images=4, pseudo_masks="all")
    items = [everything.make_dataset("test")[i] for i in range(4)]
    assert [grey_of(item["image"][None])[0] > 128 for item in items] == cars
    for item, has_car in zip(items, cars):
        assert item["mask"].shape == (8, 8) and item["mask"].dtype == torch.int64
        assert item["mask"][:, :4].eq(int(has_car)).all() and item["mask"][:, 4:].eq(0).all()
    detected = LSUNDataModule("car", root=str(tmp_path), image_size=8, eval_images=4,
                              pseudo_masks="detected").make_dataset("test")
    assert len(detected) == sum(cars) and all(detected[i]["mask"].any() for i in range(len(detected)))
    assert "mask" not in everything.make_dataset("train")[0]
    with pytest.raises(CorruptFileError, match="other images"):  # more images than annotated
        LSUNDataModule("car", root=str(tmp_path), eval_images=5, pseudo_masks="all").make_dataset("test")
    save_pseudo_masks(pseudo_mask_folder(tmp_path, "car"), [b"0" * 40] * 4,  # masks of other images
                      np.zeros((4, 16, 16), bool), np.zeros(4, bool))
    with pytest.raises(CorruptFileError, match="annotate again"):
        LSUNDataModule("car", root=str(tmp_path), eval_images=4, pseudo_masks="all").make_dataset("test")
