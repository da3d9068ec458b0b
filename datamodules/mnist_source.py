"""MNIST digits for the procedural digit sets: the real IDX files when present, else an embedded stand-in.

Looked for under the data root in torchvision's layout, ``$OBJDECOMP_DATA/MNIST/raw/``:
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each optionally gzipped (what ``torchvision.datasets.MNIST(root,
download=True)`` writes). Without them the digits come from scikit-learn's bundled 8x8
handwritten digits (1,797 images, a dependency's own data), upsampled to MNIST's layout: a
20x20 digit centred in a 28x28 frame. That stand-in is *not* MNIST, so a log line always says
which source is in use, and the source is part of every renderer's configuration (and of its
cache file name).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from datamodules.paths import data_root

log = logging.getLogger(__name__)

IDX = "idx"
SKLEARN = "sklearn"
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_SKLEARN_TRAIN = 1500  # the stand-in's first 1,500 digits play MNIST's training set


def mnist_dir() -> Path:
    return data_root() / "MNIST" / "raw"


def _find(name: str) -> Optional[Path]:
    for candidate in (mnist_dir() / name, mnist_dir() / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def mnist_source() -> str:
    """``"idx"`` when all four MNIST IDX files are present, else ``"sklearn"``."""
    found = all(_find(name) for pair in _FILES.values() for name in pair)
    return IDX if found else SKLEARN


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (uint8 data): big-endian magic ``0x0000 08 <ndim>``, then the dimensions."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:  # a truncated or damaged download
        raise ValueError(f"cannot read {path}: {error}") from error
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not a uint8 IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, found {data.size} values")
    return data.reshape(shape)


@lru_cache(maxsize=4)
def load_digits(split: str = "train", source: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """MNIST's ``train`` or ``test`` digits: uint8 ``[N, 28, 28]`` images and int64 labels.

    Args:
        split: ``train`` (60k in MNIST) or ``test`` (10k).
        source: ``"idx"`` or ``"sklearn"``; default: :func:`mnist_source`.
    """
    source = source or mnist_source()
    if source == IDX:
        images, labels = (read_idx(_find(name)) for name in _FILES[split])
        log.info("MNIST digits: IDX files in %s (%s, %d digits)", mnist_dir(), split, len(images))
        return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
    images, labels = _sklearn_digits()
    part = slice(0, _SKLEARN_TRAIN) if split == "train" else slice(_SKLEARN_TRAIN, None)
    log.warning("MNIST IDX files not found in %s: using scikit-learn's bundled 8x8 digits, "
                "upsampled to 28x28 (%s, %d digits) -- a stand-in, not MNIST. Put MNIST there "
                "(torchvision's layout) for the papers' data.", mnist_dir(), split,
                len(images[part]))
    return images[part], labels[part]


def _sklearn_digits() -> Tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    small = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16  # values 0..16
    digits = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    digits = F.pad(digits, (4, 4, 4, 4))[:, 0]  # MNIST: 20x20 digit in a 28x28 frame
    return (digits * 255).round().to(torch.uint8), torch.tensor(bunch.target, dtype=torch.int64)


def binarised(images: Tensor, size: int) -> Tensor:
    """bool ``[N, size, size]``: digits resized bilinearly (antialiased) and rounded to {0, 1}."""
    resized = F.interpolate(images[:, None].float() / 255, size=(size, size), mode="bilinear",
                            align_corners=False, antialias=size < images.shape[-1])
    return resized[:, 0] >= 0.5
