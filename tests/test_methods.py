"""What every registered method gets for free: the decomposition contract, a training step that
reaches every parameter, an exact checkpoint round trip, and DDP-relevant state registered.

Adding a method = one entry in ``METHODS``: how to build it tiny (seeded by the harness) and a
tiny batch that follows contract 1. Parameters that legitimately get no gradient at the first
step, and tensors deliberately kept per rank, are declared by the method class itself
(``parameters_without_gradient_at_first_step``, ``rank_local_tensors``; see
:class:`~objdecomp.methods.base.DecompositionModule`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Callable, Dict, Iterator, Set, Tuple

import pytest
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, default_collate
from torchmetrics import Metric

from objdecomp.methods.base import DecompositionModule
from objdecomp.methods.cis import CIS
from objdecomp.methods.conv_vae import ConvVAE
from objdecomp.methods.dti_sprites import DTISprites
from objdecomp.methods.lavae import LAVAE
from objdecomp.methods.monet import MONet, MONetSegmentation
from objdecomp.methods.perturbgan import PerturbGAN
from objdecomp.methods.redo import ReDO, ReDOSupervised
from tests.tiny import TinySquares

Batch = Dict[str, Tensor]
pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no")


def squares(num_images: int = 8, image_size: int = 16) -> Batch:
    """Coloured squares with instance masks, classes and counts (tests/tiny.py)."""
    dataset = TinySquares(num_images, image_size, seed=7)
    return default_collate([dataset[i] for i in range(num_images)])


@dataclass(frozen=True)
class Entry:
    build: Callable[[], DecompositionModule]
    batch: Callable[[], Batch] = squares


def tiny_dti_sprites() -> DTISprites:
    """DTI-Sprites with every layer drawn (no empty sprite), away from three starting points
    where one step cannot reach every layer: the heads end in zero-initialised layers (identity
    transformations, δ = 0.5) that pass no gradient to their earlier layers and the encoder,
    and a constant background does not feel its warp."""
    model = DTISprites(image_size=16, channels=3, max_objects=2, num_classes=3, num_backgrounds=1,
                       sprite_size=8, layer_transforms="col-pos", sprite_transforms="sim",
                       background_transforms="col-proj", encoder="resnet8", encoder_pool=1,
                       empty_sprite=False)
    with torch.no_grad():
        model.net.backgrounds.uniform_()
        for parameter in model.net.parameters():
            if parameter.numel() > 1 and not parameter.any():
                parameter.normal_(0, 1e-3)
    return model


CIS_TINY = dict(image_size=16, num_masks=3, backbone="resnet8", backbone_width=4,
                inpainter_width=2, object_vae=True, vae_width=4, vae_hidden=8, stage=2,
                cycle_weight=1e-3)
MONET_TINY = dict(image_size=16, max_objects=2, unet_channels=(4, 8), unet_mlp_hidden=8,
                  latent_dim=3, encoder_widths=(4, 4), encoder_hidden=8, decoder_width=4,
                  decoder_layers=2)
REDO_TINY = dict(image_size=16, z_dim=4, mask_width=8, mask_res_blocks=1, gen_width=4,
                 disc_width=4, z_net_width=4)

# No growing (16 px from the start: every block, head and from-RGB layer is used at once);
# tests/test_perturbgan.py covers the growing.
PERTURBGAN_TINY = dict(image_size=16, latent_dim=8, mapping_depth=2, channel_base=64,
                       channel_max=8, resolutions=[16], batch_sizes=[8], learning_rates=[1e-3],
                       fade_images=0, stable_images=0,
                       encoder_backbone="resnet8", encoder_size=16, encoder_width=4)

METHODS: Dict[str, Entry] = {
    "dti_sprites": Entry(tiny_dti_sprites),
    "redo": Entry(lambda: ReDO(**REDO_TINY)),
    "redo_supervised": Entry(lambda: ReDOSupervised(image_size=16, mask_width=8, mask_res_blocks=1)),
    "conv_vae": Entry(lambda: ConvVAE(image_size=16, channels=3, width=8, latent_channels=2)),
    # n = 1 forced and the warm-up on, as at LAVAE's first step (every net then gets a gradient).
    "lavae": Entry(lambda: LAVAE(image_size=16, channels=3, max_count=4, latent_dim=4, sprite_size=5,
                                 width=4, blocks=1, sprite_width=4, aux_width=4, aux_side=2,
                                 aux_weight=1.0, force_one=1.0)),
    "perturbgan": Entry(lambda: PerturbGAN(**PERTURBGAN_TINY)),
    "perturbgan_single": Entry(lambda: PerturbGAN(generators="single", **PERTURBGAN_TINY)),
    "perturbgan_encoder": Entry(lambda: PerturbGAN(stage="encoder", **PERTURBGAN_TINY)),
    "monet": Entry(lambda: MONet(**MONET_TINY)),
    "monet_segmentation": Entry(lambda: MONetSegmentation(
        image_size=16, num_slots=3, backbone="resnet8", width=4, latent_dim=3,
        encoder_widths=(4, 4), encoder_hidden=8, decoder_width=4, decoder_layers=2)),
    "cis": Entry(lambda: CIS(**CIS_TINY)),
}


def build(name: str) -> DecompositionModule:
    torch.manual_seed(0)
    return METHODS[name].build()


class GradientRecorder(pl.Callback):
    """Names of the parameters with a non-zero gradient before any optimizer step (manual and
    automatic optimisation alike: Lightning calls this hook before each ``step``)."""

    def __init__(self) -> None:
        self.reached: Set[str] = set()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for name, parameter in pl_module.named_parameters():
            if parameter.grad is not None and parameter.grad.abs().sum() > 0:
                self.reached.add(name)


@dataclass
class Trained:
    name: str
    model: DecompositionModule
    batch: Batch
    trainable: Set[str]
    reached: Set[str]
    checkpoint: str


@pytest.fixture(scope="module", params=sorted(METHODS))
def trained(request, tmp_path_factory) -> Trained:
    """The method after one training batch through a real Trainer, and its checkpoint."""
    name = request.param
    model, batch = build(name), METHODS[name].batch()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    recorder = GradientRecorder()
    folder = tmp_path_factory.mktemp(name)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                         num_sanity_val_steps=0, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=folder, callbacks=[recorder])
    trainer.fit(model, train_dataloaders=DataLoader([batch], batch_size=None))
    checkpoint = str(folder / "one_step.ckpt")
    trainer.save_checkpoint(checkpoint)
    return Trained(name, model, batch, trainable, recorder.reached, checkpoint)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_decompose_honours_the_contract_and_pictures_draw_from_the_batch(name):
    model, batch = build(name).eval(), METHODS[name].batch()
    with torch.no_grad():
        decomposition = model.checked_decompose(batch["image"])
        pictures = model.pictures(batch, decomposition)
    for picture_name, picture in pictures.items():
        assert picture.dim() == 3 and picture.shape[0] == 3, picture_name
        assert 0 <= picture.min() and picture.max() <= 1, picture_name


def test_one_training_step_reaches_every_parameter(trained: Trained):
    exempt = type(trained.model).parameters_without_gradient_at_first_step
    unreached = trained.trainable - trained.reached
    unexplained = sorted(n for n in unreached if not any(fnmatch(n, p) for p in exempt))
    assert not unexplained, f"no gradient at the first step, and no reason given: {unexplained}"
    stale = [p for p in exempt if not any(fnmatch(n, p) for n in trained.trainable)]
    assert not stale, f"declared patterns that match no parameter: {stale}"


def test_checkpoint_round_trip_reproduces_decompose(trained: Trained):
    fresh = type(trained.model).load_from_checkpoint(trained.checkpoint, map_location="cpu")
    images = trained.batch["image"]
    outputs = []
    for model in (trained.model, fresh):
        model.eval()
        torch.manual_seed(1)  # the same draws for a stochastic decompose
        with torch.no_grad():
            outputs.append(model.checked_decompose(images))
    for field in ("recon", "masks", "background", "layers", "classes", "count"):
        before, after = (getattr(o, field) for o in outputs)
        assert (before is None) == (after is None), field
        assert before is None or torch.equal(before, after), field


def _tensor_attributes(value, path: str) -> Iterator[Tuple[str, Tensor]]:
    if isinstance(value, Tensor):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensor_attributes(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensor_attributes(item, f"{path}[{key!r}]")


def test_state_is_registered_for_ddp_and_checkpoints(trained: Trained):
    """Tensors a method keeps must be parameters or buffers (moved to the device, saved in
    checkpoints, broadcast by DDP); torchmetrics states synchronise themselves."""
    allowed = type(trained.model).rank_local_tensors
    plain = []
    for prefix, module in trained.model.named_modules():
        if isinstance(module, Metric):
            continue
        for attribute, value in vars(module).items():
            if attribute in ("_parameters", "_buffers", "_modules"):  # the registered ones
                continue
            for path, _ in _tensor_attributes(value, attribute):
                name = f"{prefix}.{path}" if prefix else path
                if not (prefix == "" and attribute in allowed):
                    plain.append(name)
    assert not plain, f"tensor attributes that are neither parameters nor buffers: {plain}"
