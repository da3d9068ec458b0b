"""Flying Animals (CIS §4.1): 1-5 animal photographs composited over a landscape, 192x256.

The photographs are the CIS authors' asset folder (their README links a ``data.zip``; the
user provides it): ``foregrounds/<i>.png`` (an RGB canvas of 192x256 with one animal),
``masks/<i>.png`` (its binary mask) and ``backgrounds/<i>.png`` (a 192x256 landscape), numbered
from 0; entry 0 of each folder is padding the authors' generator never draws, so the animals are
1..N (24 kinds x 10 instances) and the landscapes 1..M (10 x 10). ``root`` may hold the three
folders or a ``data/`` folder with them (the zip's layout).

Composition (ours; the rules are those of the authors' generator): the count is 5, 4, 3, 2, 1
with probabilities .8, .1, .06, .03, .01; each animal is scaled by 1/f about the centre with
f ~ U(0.9, 1.2) and shifted by (dx, dy) ~ U(+-112) x U(+-84) px (the code's W*2.2//5 and
H*2.2//5), redrawn while within L1 distance 97 of an earlier animal; earlier animals are in
front; each animal and the background get an additive brightness U(+-0.36). Deliberate
difference: the composite is clipped to [0, 1] (contract 1; the authors' is not clipped).
Ground truth: ``mask`` 0 = background, animals 1..n in depth order, where a pixel belongs to the
layer of largest weight in the soft (bilinearly warped) composite.

Splits: every item is a deterministic function of (seed, split, index); validation and test
draw from the asset subset of the authors' ``img_data_test.npz`` (their decode script leaves
out the animals and landscapes listed below), training from all assets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule
from datamodules.paths import DatasetNotFoundError
from datamodules.procedural import Random, item_keys
from datamodules.real_data import default_root

HEIGHT, WIDTH = 192, 256
COUNT_PROBABILITIES = (0.01, 0.03, 0.06, 0.10, 0.80)  # P(1) ... P(5)
MAX_SHIFT = (WIDTH * 2.2 // 5, HEIGHT * 2.2 // 5)  # (112, 84) px
MIN_DISTANCE = 97.0  # L1, between animal shifts
SCALE = (0.9, 1.2)
BRIGHTNESS = 0.36
CANDIDATES = 64  # shifts drawn per animal; the first far enough is taken
# Left out of the evaluation assets by the authors' decode script (fa_data_decode.py).
TEST_EXCLUDED_BACKGROUNDS = frozenset([
    34, 80, 71, 72, 38, 28, 85, 88, 93, 86, 75, 70, 42, 30, 24, 64, 65, 90, 82, 25, 29, 21, 40, 4,
    51, 79, 33, 68, 83, 91, 59, 6, 87, 45, 94, 99, 23, 78, 36, 19, 77, 39, 62, 52, 81, 56, 98, 43])
TEST_EXCLUDED_ANIMALS = frozenset([2, 3, 7, 8, 11, 20, 4, 6, 9, 19])
FOLDERS = ("foregrounds", "masks", "backgrounds")


def asset_folder(root: Path) -> Path:
    """``root`` or ``root/data`` (the zip's layout), whichever holds the three folders."""
    for folder in (root, root / "data"):
        if all((folder / name).is_dir() for name in FOLDERS):
            return folder
    raise DatasetNotFoundError("flying_animals", root, "no foregrounds/, masks/ and backgrounds/ "
                               "folders of numbered PNGs (the CIS authors' data.zip, unzipped)")


def _numbered(folder: Path) -> List[Path]:
    files = sorted(folder.glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
    if [p.stem for p in files] != [str(i) for i in range(len(files))]:
        raise DatasetNotFoundError("flying_animals", folder, "PNGs must be numbered 0.png, 1.png, ...")
    return files


class FlyingAnimalsAssets:
    """The photographs as float tensors: animals ``[N, 3, H, W]``, masks ``[N, 1, H, W]``,
    landscapes ``[M, 3, H, W]`` (index 0 of each: the folder's unused entry 0)."""

    def __init__(self, root: Path):
        folder = asset_folder(root)
        foregrounds, masks = _numbered(folder / "foregrounds"), _numbered(folder / "masks")
        if len(foregrounds) != len(masks):
            raise DatasetNotFoundError("flying_animals", folder, f"{len(foregrounds)} foregrounds "
                                       f"but {len(masks)} masks")
        self.animals = self._load(foregrounds, "RGB")
        self.masks = (self._load(masks, "L") > 0.5).float()
        self.backgrounds = self._load(_numbered(folder / "backgrounds"), "RGB")
        if len(self.animals) < 2 or len(self.backgrounds) < 2:
            raise DatasetNotFoundError("flying_animals", folder, "needs entry 0 and at least one "
                                       "animal and one landscape")

    @staticmethod
    def _load(paths: List[Path], mode: str) -> Tensor:
        arrays = []
        for path in paths:
            image = Image.open(path).convert(mode)
            if image.size != (WIDTH, HEIGHT):
                raise DatasetNotFoundError("flying_animals", path, f"{image.size[0]}x{image.size[1]} "
                                           f"px, not {WIDTH}x{HEIGHT}")
            arrays.append(np.asarray(image))
        stacked = torch.from_numpy(np.stack(arrays)).float().div_(255)
        return stacked[:, None] if stacked.dim() == 3 else stacked.permute(0, 3, 1, 2)


class FlyingAnimalsScenes(Dataset):
    """Composites of ``split``; item ``i`` depends only on (seed, split, i) and the assets."""

    def __init__(self, assets: FlyingAnimalsAssets, split: str, size: int, seed: int):
        self.assets, self.split, self.size, self.seed = assets, split, size, seed
        evaluation = split != "train"
        self.animal_ids = self._usable(len(assets.animals), TEST_EXCLUDED_ANIMALS if evaluation else ())
        self.background_ids = self._usable(len(assets.backgrounds),
                                           TEST_EXCLUDED_BACKGROUNDS if evaluation else ())

    @staticmethod
    def _usable(total: int, excluded) -> Tensor:
        ids = [i for i in range(1, total) if i not in excluded]
        return torch.tensor(ids or list(range(1, total)))

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        rng = Random(item_keys(self.seed, "flying_animals", self.split, [index]))
        count = int(rng.choice(COUNT_PROBABILITIES)[0]) + 1
        kmax = len(COUNT_PROBABILITIES)
        animals = self.animal_ids[rng.integers(0, len(self.animal_ids), kmax)[0, :count]]
        background = self.background_ids[rng.integers(0, len(self.background_ids))[0]]
        scale = rng.uniform(kmax, low=SCALE[0], high=SCALE[1])[0, :count]
        brightness = rng.uniform(kmax + 1, low=-BRIGHTNESS, high=BRIGHTNESS)[0]
        shifts = self._place(rng, count)
        texture, alpha = self._warp(animals, scale, shifts)
        layers = torch.cat([self.assets.backgrounds[background][None], texture]) + brightness[
            : count + 1, None, None, None]
        weights = self._depth_weights(alpha)  # [count + 1, 1, H, W], background first
        image = (layers * weights).sum(0).clamp(0, 1)
        mask = weights[:, 0].argmax(0)
        return {"image": image, "mask": mask, "count": torch.tensor(int(mask.unique().numel() - 1))}

    @staticmethod
    def _place(rng: Random, count: int) -> Tensor:
        """Shifts ``[count, 2]`` (dx, dy): for each animal the first candidate farther than
        ``MIN_DISTANCE`` (L1) from every earlier one (the code's redraw loop)."""
        high = torch.tensor(MAX_SHIFT)
        candidates = (rng.uniform(len(COUNT_PROBABILITIES), CANDIDATES, 2)[0] * 2 - 1) * high
        shifts = torch.zeros(count, 2)
        for k in range(count):
            far = ((candidates[k][:, None] - shifts[None, :k]).abs().sum(-1) > MIN_DISTANCE).all(1)
            shifts[k] = candidates[k][int(far.float().argmax())]
        return shifts

    def _warp(self, animals: Tensor, scale: Tensor, shifts: Tensor):
        """Animal k sampled at input = f·(output − centre − shift) + centre (bilinear, zeros
        outside), the code's projective transform [f, 0, W/2 − fW/2 − f·dx, 0, f, ...]."""
        n = len(animals)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, 0, 2] = -scale * shifts[:, 0] * 2 / WIDTH  # in grid_sample's [-1, 1] units
        theta[:, 1, 2] = -scale * shifts[:, 1] * 2 / HEIGHT
        grid = F.affine_grid(theta, [n, 4, HEIGHT, WIDTH], align_corners=False)
        stack = torch.cat([self.assets.animals[animals], self.assets.masks[animals]], 1)
        warped = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False).clamp(0, 1)
        return warped[:, :3], warped[:, 3:]

    @staticmethod
    def _depth_weights(alpha: Tensor) -> Tensor:
        """Front-to-back: animal k keeps alpha_k of what the earlier ones left; the background
        the rest."""
        covered = torch.zeros_like(alpha[0])
        weights = []
        for a in alpha:
            weights.append(a * (1 - covered))
            covered = covered + weights[-1]
        return torch.stack([1 - covered] + weights)


class FlyingAnimalsDataModule(ObjectDataModule):
    """Flying Animals (CIS §4.1, Table 1): 192x256 composites; ``image_size`` is the longer side.

    Args:
        root: the asset folder (default ``<data root>/flying_animals``).
        train_size: training composites (the authors generate them on the fly).
        val_size: validation composites (the authors: 200).
        test_size: test composites (the authors: 2,000; mIoU over 10 subsets of 200).
        batch_size, options: see :class:`ObjectDataModule`; its ``seed`` seeds the composition.
    """

    dataset_name = "flying_animals"
    image_size, channels, max_objects, num_classes, num_background = WIDTH, 3, 5, 0, 1
    height, width = HEIGHT, WIDTH

    def __init__(self, root: Optional[str] = None, train_size: int = 1_000_000,
                 val_size: int = 200, test_size: int = 2_000, batch_size: int = 4,
                 **options: Any):
        super().__init__(batch_size, **options)
        self.root = default_root(root, self.dataset_name)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self._assets: Optional[FlyingAnimalsAssets] = None

    def make_dataset(self, split: str) -> Dataset:
        if self._assets is None:
            self._assets = FlyingAnimalsAssets(self.root)
        return FlyingAnimalsScenes(self._assets, split, self.sizes[split], self.seed)
