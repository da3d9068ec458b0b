"""CIS (Yang et al. 2020): the segmentation network, the inpainter, the losses and the game."""

from __future__ import annotations

from typing import Dict, List

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader

from objdecomp.methods.cis import CIS
from objdecomp.methods.cis.losses import (cycle_consistency_loss, inpainter_loss, random_boxes,
                                          region_error, segmenter_loss)
from objdecomp.nn.inpainting import Inpainter, binary_edge_map, sobel, strided_conv
from objdecomp.nn.segmentation import SegmentationNet, dilated_resnet50_trunk


def test_resnet50_trunk_is_torchvisions_dilated_resnet50():
    trunk = dilated_resnet50_trunk()
    ref = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[True, True, True])
    ref_convs = [m for m in ref.modules() if isinstance(m, torch.nn.Conv2d)]
    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.weight.shape, c.stride, c.dilation) for c in convs] == \
        [(c.weight.shape, c.stride, c.dilation) for c in ref_convs]
    assert trunk.out_channels == 2048


def test_segmentation_masks_are_a_partition_at_input_size():
    torch.manual_seed(0)
    for backbone, width in (("resnet8", 8), ("resnet50", 4)):
        net = SegmentationNet(num_masks=5, backbone=backbone, width=width, input_size=48)
        masks = net.masks(torch.rand(2, 3, 32, 32))
        assert masks.shape == (2, 5, 32, 32)
        torch.testing.assert_close(masks.sum(1), torch.ones(2, 32, 32))
        assert masks.std() > 0


# --- the binarised edge map -------------------------------------------------------------------


def test_edge_map_of_a_vertical_step_marks_the_step_columns_in_the_horizontal_map_only():
    image = torch.zeros(1, 3, 8, 8)
    image[..., 4:] = 1.0  # bright right half: a vertical edge between columns 3 and 4
    edges = binary_edge_map(image, threshold=0.5)
    assert edges.shape == (1, 2, 8, 8)
    assert not edges[0, 0].any()  # no vertical change
    expected = torch.zeros(8, 8)
    expected[:, 3:5] = 1
    assert torch.equal(edges[0, 1], expected)


def test_edge_map_of_a_square_and_of_a_flat_image():
    image = torch.zeros(1, 3, 10, 10)
    image[:, 0, 3:7, 3:7] = 1.0  # a red square
    edges = binary_edge_map(image, threshold=0.5)
    rows_with_edges = edges[0, 0].any(1).nonzero().flatten().tolist()
    assert rows_with_edges == [2, 3, 6, 7]  # above/below the square's top and bottom borders
    assert not binary_edge_map(torch.full((1, 3, 6, 6), 0.3)).any()
    # Flying Animals' variant: signed Sobel summed over channels, /15, |.| > 0.04.
    flat = torch.full((1, 3, 6, 6), 0.7)
    assert not binary_edge_map(flat, 0.04, normalize=False, scale=15).any()


def test_sobel_matches_the_kernel_by_hand():
    image = torch.arange(25.0).reshape(1, 1, 5, 5)  # d/dy = 5 per row, d/dx = 1 per column
    response = sobel(image)[0, 0]
    assert torch.allclose(response[0, 1:-1, 1:-1], torch.full((3, 3), 40.0))  # 8 x 5
    assert torch.allclose(response[1, 1:-1, 1:-1], torch.full((3, 3), 8.0))  # 8 x 1


# --- the inpainter ----------------------------------------------------------------------------
def test_inpainting_ignores_the_pixels_it_must_inpaint_and_shares_the_edge_branch():
    torch.manual_seed(0)
    net = Inpainter(width=2)
    images, edges = torch.rand(2, 3, 32, 32), torch.rand(2, 2, 32, 32).round()
    masks = torch.zeros(2, 2, 32, 32)
    masks[:, 0, 8:20, 4:16] = 1
    masks[:, 1] = 1 - masks[:, 0]
    out = net(images, masks, edges)
    assert out.shape == (2, 2, 3, 32, 32)
    changed = images.clone()
    changed[:, :, 8:20, 4:16] = torch.rand(2, 3, 12, 12)  # only inside mask 0
    assert torch.allclose(net(changed, masks, edges)[:, 0], out[:, 0], atol=1e-6)
    assert not torch.allclose(net(changed, masks, edges)[:, 1], out[:, 1])
    one_by_one = torch.stack([net(images, masks[:, k : k + 1], edges)[:, 0] for k in range(2)], 1)
    assert torch.allclose(one_by_one, out, atol=1e-6)


def test_random_boxes_are_a_box_and_its_complement_within_the_code_bounds():
    torch.manual_seed(0)
    for _ in range(20):
        boxes = random_boxes(torch.zeros(3, 3, 30, 40))
        assert boxes.shape == (3, 2, 30, 40)
        assert torch.equal(boxes.sum(1), torch.ones(3, 30, 40))
        rows = boxes[0, 0].any(1).nonzero().flatten()
        cols = boxes[0, 0].any(0).nonzero().flatten()
        assert rows[0] < 20 and len(rows) >= 6 and rows[-1] <= 27  # r1 < 2H/3, r2 - r1 >= H/5
        assert cols[0] < 26 and len(cols) >= 8 and cols[-1] <= 37
        assert boxes[0, 0].sum() == len(rows) * len(cols)  # one rectangle
        assert torch.equal(boxes[0], boxes[2])  # one box for the batch


# --- the CIS loss -----------------------------------------------------------------------------
def harmonic_inpainting(images: torch.Tensor, masks: torch.Tensor, iterations: int = 400):
    """A hand-built inpainter: masked pixels relax to the mean of their 4 neighbours, the
    context held fixed (a Laplace equation with the context as boundary)."""
    out = []
    kernel = torch.tensor([[0, 0.25, 0], [0.25, 0, 0.25], [0, 0.25, 0]]).expand(3, 1, 3, 3)
    for k in range(masks.shape[1]):
        m = masks[:, k : k + 1]
        x = images * (1 - m)
        for _ in range(iterations):
            smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
            x = images * (1 - m) + smooth * m
        out.append(x)
    return torch.stack(out, 1)


def test_cis_loss_is_larger_for_a_mask_that_leaks_context():
    """A red square on blue: a mask that is exactly the square leaves no red in its context,
    so the square cannot be inpainted; a mask over half the square leaves the other half
    visible, which predicts it. Ω's loss must prefer the exact mask."""
    image = torch.zeros(1, 3, 24, 24)
    image[:, 2] = 1.0
    image[:, :, 6:18, 6:18] = torch.tensor([1.0, 0, 0])[:, None, None]
    exact, leaking = torch.zeros(1, 24, 24), torch.zeros(1, 24, 24)
    exact[:, 6:18, 6:18] = 1
    leaking[:, 6:18, 6:12] = 1
    losses = {}
    for name, mask in (("exact", exact), ("leaking", leaking)):
        masks = torch.stack([mask, 1 - mask], 1)
        inpainted = harmonic_inpainting(image, masks)
        unconditioned = torch.full_like(image, 0.5)
        losses[name] = float(segmenter_loss(inpainted[:, :1], image, masks[:, :1], 1.0, unconditioned))
        losses[name + "_image"] = float(segmenter_loss(inpainted[:, :1], image, masks[:, :1], 1.0))
    assert losses["leaking"] > losses["exact"] + 0.2
    assert losses["leaking_image"] > losses["exact_image"] + 0.2


def test_region_errors_by_hand():
    images = torch.zeros(1, 3, 2, 2)
    prediction = torch.ones(1, 2, 3, 2, 2)
    masks = torch.tensor([[[[1.0, 0.5], [0, 0]], [[0, 0.5], [1, 1]]]])
    assert torch.allclose(region_error(prediction, images, masks), torch.tensor([[4.5, 7.5]]))
    assert torch.isclose(inpainter_loss(prediction, images, masks), torch.tensor(12.0 / 12))
    # 1 - error / (ε + ψ(∅)'s error): ψ(∅) = 0.5 everywhere, ε = 1.5.
    expected = (1 - 4.5 / (1.5 + 2.25)) + (1 - 7.5 / (1.5 + 3.75))
    assert torch.isclose(segmenter_loss(prediction, images, masks, 1.5,
                                         torch.full((1, 3, 2, 2), 0.5)), torch.tensor(expected))


# --- the game: each side moves only its own parameters ------------------------------------------
TINY = dict(image_size=16, num_masks=3, backbone="resnet8", backbone_width=4, inpainter_width=2,
            object_vae=True, vae_width=4, vae_hidden=8, cycle_weight=1e-3)


class Snapshots(pl.Callback):
    """The parameters that changed at each training batch."""

    def __init__(self):
        self.changed: List[Dict[str, bool]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = {n: p.detach().clone() for n, p in module.named_parameters()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.changed.append({n: not torch.equal(p, self.before[n])
                             for n, p in module.named_parameters()})


def _fit(model: CIS, batches: int) -> Snapshots:
    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16)
    snapshots = Snapshots()
    trainer = pl.Trainer(max_steps=batches, limit_val_batches=0, num_sanity_val_steps=0,
                         accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[snapshots])
    trainer.fit(model, train_dataloaders=DataLoader([{"image": images}] * batches, batch_size=None))
    return snapshots


def _moved(changed: Dict[str, bool], prefix: str) -> List[bool]:
    return [moved for name, moved in changed.items() if name.startswith(prefix)]


def test_psi_and_omega_each_move_only_their_own_parameters_in_the_code_ratio():
    torch.manual_seed(0)
    model = CIS(**TINY, stage=2, inpainter_steps=1, segmenter_steps=3)
    snapshots = _fit(model, 5)
    players = [model.player(b) for b in range(5)]
    assert players == ["inpainter", "segmenter", "segmenter", "segmenter", "inpainter"]
    for changed, player in zip(snapshots.changed, players):
        inpainter, others = _moved(changed, "inpainter."), _moved(changed, "segmenter.") + _moved(changed, "vae.")
        if player == "inpainter":
            assert all(inpainter) and not any(others)
        else:  # Ω and the VAEs descend together (Eq. 12); every one of their parameters moves
            assert not any(inpainter) and all(others)


def test_pretraining_moves_only_psi_and_stage_one_leaves_the_vaes():
    torch.manual_seed(0)
    snapshots = _fit(CIS(**TINY, stage=0), 2)
    for changed in snapshots.changed:
        assert all(_moved(changed, "inpainter.")) and not any(_moved(changed, "segmenter."))
    snapshots = _fit(CIS(**TINY, stage=1, inpainter_steps=1, segmenter_steps=1), 2)
    assert all(_moved(snapshots.changed[1], "segmenter."))
    assert not any(_moved(snapshots.changed[1], "vae."))


def test_segmenter_step_ascends_the_inpainting_error_it_is_given():
    """Ω's gradient step lowers its loss 1 − error/normaliser, i.e. raises L_SD."""
    torch.manual_seed(0)
    model = CIS(**{**TINY, "object_vae": False}, segmenter_lr=1e-2)
    images = torch.rand(4, 3, 16, 16)
    edges = model.edges(images)
    optimizer = torch.optim.SGD(model.segmenter.parameters(), lr=1e-2)
    before = model.segmenter_objective(images, edges, 1, {})
    before.backward()
    optimizer.step()
    after = model.segmenter_objective(images, edges, 1, {})
    assert after < before


# --- perceptual cycle-consistency -------------------------------------------------------------
def test_cycle_loss_is_zero_for_an_identity_perturbation_and_positive_otherwise():
    torch.manual_seed(0)
    model = CIS(**TINY, perturbation_scale=0.0).eval()
    images = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        z, _ = model.vae.encode(images, model.segmenter.masks(images))
        decode = model.vae.decode
        # the identity perturbation: the perturbed factors are the factors (σ = 0), and the
        # synthesised image is the input itself
        model.vae.decode = lambda latents: (None, None, images)
        assert float(model.cycle_loss(images, z)) == 0.0
        model.hparams.perturbation_scale = 1.0
        assert float(model.cycle_loss(images, z)) > 0.0
        model.vae.decode = decode
        assert float(model.cycle_loss(images, z)) > 0.0


def test_cycle_consistency_loss_by_hand():
    z = torch.zeros(1, 3, 2)
    z_cycle = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]])
    # object 1 perturbed to (2, 0): it matches; object 0 moved by 1 although it was kept
    loss = cycle_consistency_loss(z, torch.tensor([[2.0, 0.0]]), z_cycle, torch.tensor([1]))
    assert float(loss) == 1.0


# --- identity switches (Table 2) ----------------------------------------------------------------
def test_identity_switches_count_frames_where_an_object_leaves_its_channel():
    from objdecomp.methods.cis.identity import IdentitySwitches
    from objdecomp.types import Decomposition

    truth = torch.zeros(4, 6, 6, dtype=torch.long)
    truth[:, 0:2, 0:3] = 1  # the ellipse
    truth[:, 3:6, 3:6] = 2  # the square
    masks = torch.zeros(4, 3, 6, 6)
    masks[:, 2] = 1.0
    masks[:, 2, 0:2, 0:3], masks[:, 0, 0:2, 0:3] = 0, 1  # ellipse in channel 0 ...
    masks[:, 2, 3:6, 3:6], masks[:, 1, 3:6, 3:6] = 0, 1  # ... square in channel 1
    masks[3, 0:2, 3:6, 3:6] = torch.tensor([1.0, 0.0])[:, None, None]  # frame 3: square -> 0
    metric = IdentitySwitches(num_channels=3)
    decomposition = Decomposition(recon=torch.zeros(4, 3, 6, 6), masks=masks,
                                  background=torch.tensor([False, False, True]))
    metric.update({"mask": truth[:2]}, decomposition.__class__(
        recon=decomposition.recon[:2], masks=masks[:2], background=decomposition.background))
    metric.update({"mask": truth[2:]}, decomposition.__class__(
        recon=decomposition.recon[2:], masks=masks[2:], background=decomposition.background))
    result = metric.compute()
    assert float(result[""]) == 1.0 and float(result["frames"]) == 4.0
    assert float(result["rate"]) == 0.25
    assert float(result["shared"]) == 1.0  # frame 3: both objects in channel 0


# --- Flying Animals on fixture assets -----------------------------------------------------------
def test_flying_animals_composites_follow_the_rules_on_fixture_assets(tmp_path):
    import pytest

    from datamodules.flying_animals import FlyingAnimalsDataModule
    from datamodules.paths import DatasetNotFoundError
    from tests.fixtures.flying_animals import write_flying_animals

    with pytest.raises(DatasetNotFoundError, match="foregrounds"):
        FlyingAnimalsDataModule(root=str(tmp_path / "missing")).make_dataset("train")
    write_flying_animals(tmp_path / "fa", animals=4, backgrounds=3, zip_layout=True)
    datamodule = FlyingAnimalsDataModule(root=str(tmp_path / "fa"), train_size=6, val_size=2,
                                         test_size=2)
    train = datamodule.make_dataset("train")
    items = [train[i] for i in range(6)]
    for item in items:
        image, mask = item["image"], item["mask"]
        assert image.shape == (3, 192, 256) and mask.shape == (192, 256)
        assert 0 <= image.min() and image.max() <= 1
        ids = mask.unique()
        assert ids[0] == 0 and len(ids) - 1 == int(item["count"]) and int(item["count"]) <= 5
        # every animal is 40x60 at scale 1/f, f in [0.9, 1.2]: 1,667..2,963 px when unoccluded
        assert all((mask == i).sum() <= 2963 + 200 for i in ids[1:])
        # the background is flat grey plus one brightness shift: one value where no animal is
        # (but along the animals' bilinear borders)
        background = image[:, mask == 0]
        flat = (background - background.median(1, keepdim=True).values).abs().amax(0) < 1e-3
        assert flat.float().mean() > 0.97
    assert torch.equal(train[3]["image"], FlyingAnimalsDataModule(
        root=str(tmp_path / "fa"), train_size=6).make_dataset("train")[3]["image"])
    assert not torch.equal(datamodule.make_dataset("test")[0]["image"], items[0]["image"])


def test_strided_convolutions_over_a_1x1_map_give_the_same_values_and_finite_bf16_gradients():
    """The deepest encoder layers see 1x1 maps on small images; there the stride is dropped
    (same output), because oneDNN's bf16 weight gradient of a strided convolution over a 1x1
    input is non-finite in about half of the calls (torch 2.14, CPU)."""
    conv = torch.nn.Conv2d(16, 16, 3, stride=2, padding=1)
    x = torch.randn(4, 16, 1, 1)
    assert torch.allclose(strided_conv(conv, x), conv(x), atol=1e-6)
    wide = torch.randn(4, 16, 5, 5)
    assert torch.equal(strided_conv(conv, wide), conv(wide))
    encoder = Inpainter(channels=3, width=2).context_encoder
    for _ in range(20):  # each call failed with probability ~0.6 before
        encoder.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = encoder(torch.rand(2, 5, 16, 16))
        features[-1].float().sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_bf16_mixed_precision_trains_every_stage_on_cpu():
    """The bf16 path (autocast inside training_step) runs the three stages with finite losses."""
    torch.manual_seed(0)
    model = CIS(**TINY, stage=2, inpainter_steps=1, segmenter_steps=1)
    images = torch.rand(4, 3, 16, 16)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, num_sanity_val_steps=0,
                         accelerator="cpu", precision="bf16-mixed", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(model, train_dataloaders=DataLoader([{"image": images}] * 2, batch_size=None))
    logged = trainer.callback_metrics
    assert {"train/inpainter", "train/segmenter", "train/cis", "train/cycle"} <= set(logged)
    assert all(torch.isfinite(value) for value in logged.values())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decomposition = model.eval().checked_decompose(images)
    assert decomposition.masks.dtype == torch.float32
