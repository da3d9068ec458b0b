"""Shared machinery of the procedural benchmarks: keyed randomness, batched rendering, caching.

Every image is a pure function of its key ``(seed, dataset, split, index)``:

* :class:`Random` is a counter-based generator (splitmix64 over ``key + counter``) that draws
  one independent stream per image, vectorised over a whole batch of images. Nothing depends
  on the worker, the process, the batch an image is rendered in, or the order of requests.
* A renderer (a frozen dataclass, so that it pickles into workers and names its cache file)
  maps a :class:`Random` over N keys to a :class:`Scene` of N images, drawing every image's
  parameters in one go and rasterising with tensor ops. Rendering uses only element-wise,
  correctly rounded arithmetic on per-image values (trigonometry comes from tables built in
  double precision), so an image is bit-identical whichever batch it is rendered in.
* Images whose draw breaks a rule (an object fully hidden, no room for an object) are redrawn
  from the next *attempt* of their own key, so rejection sampling stays a per-image function.
* :class:`ProceduralDataset` renders the indices of a whole batch at once (``__getitems__``)
  and can materialise a fixed-size split into a uint8 cache on disk. Images are quantised to
  uint8 levels when rendered, so the cache is lossless.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.base import ObjectDataModule

log = logging.getLogger(__name__)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAMS = {"train": 1, "val": 2, "test": 3}
FIELDS = ("image", "mask", "semantic", "count")


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrap-around arithmetic is well defined)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def item_keys(seed: int, dataset: str, split: str, indices: Sequence[int]) -> np.ndarray:
    """uint64 key of each item; different datasets and splits draw from disjoint streams."""
    salt = np.uint64(zlib.crc32(dataset.encode()))  # stable across processes, unlike hash()
    stream = np.uint64(_STREAMS.get(split, zlib.crc32(split.encode()) | 1 << 32))
    base = _mix(_mix(np.array([seed], dtype=np.uint64) ^ salt) + np.array([stream]) * _GOLDEN)
    return _mix(base + np.asarray(indices, dtype=np.uint64) * _GOLDEN)


class Random:
    """Independent random streams, one per key, drawn for all keys at once.

    Each call consumes the next block of every stream's counter, so the values an image gets
    depend only on its key and on the sequence of calls the renderer makes.
    """

    def __init__(self, keys: np.ndarray):
        self.keys = np.asarray(keys, dtype=np.uint64)
        self.counter = 0

    def __len__(self) -> int:
        return len(self.keys)

    def _bits(self, shape: Sequence[int]) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64))
        counters = np.arange(self.counter + 1, self.counter + size + 1, dtype=np.uint64)
        self.counter += size
        bits = _mix(self.keys[:, None] + counters[None, :] * _GOLDEN)
        return bits.reshape(len(self.keys), *shape)

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
        """float32 ``[N, *shape]`` uniform in ``[low, high)`` (24-bit resolution)."""
        unit = (self._bits(shape) >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
        return torch.from_numpy(unit) * (high - low) + low

    def integers(self, low: int, high: int, *shape: int) -> Tensor:
        """int64 ``[N, *shape]`` uniform in ``[low, high)``."""
        span = np.uint64(high - low)
        return torch.from_numpy((self._bits(shape) % span).astype(np.int64)) + low

    def choice(self, probabilities: Sequence[float], *shape: int) -> Tensor:
        """int64 ``[N, *shape]`` indices drawn with the given probabilities."""
        cumulative = torch.tensor(np.cumsum(probabilities, dtype=np.float64), dtype=torch.float32)
        drawn = torch.searchsorted(cumulative, self.uniform(*shape).contiguous(), right=True)
        return drawn.clamp(max=len(probabilities) - 1)

    def attempt(self, number: int) -> "Random":
        """A fresh generator for the ``number``-th redraw of the same keys."""
        salt = np.array([number], dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
        return Random(_mix(self.keys ^ salt))


@dataclass
class Scene:
    """A batch of rendered images with ground truth (uint8 storage; see :func:`to_items`).

    ``ok[i]`` is False when image i broke one of its renderer's rules and must be redrawn.
    """

    image: Tensor  # uint8 [N, C, H, W]
    mask: Tensor  # uint8 [N, H, W], 0 = background, objects 1..K
    semantic: Tensor  # uint8 [N, H, W], 0 = background
    count: Tensor  # int64 [N], visible objects
    ok: Tensor  # bool [N]

    def put(self, index: Tensor, other: "Scene") -> None:
        for name in (*FIELDS, "ok"):
            getattr(self, name)[index] = getattr(other, name)


Renderer = Callable[[Random], Scene]


def render_keys(renderer: Renderer, keys: np.ndarray, max_attempts: int = 100) -> Scene:
    """Render one image per key, redrawing each failed image from its next attempt."""
    rng = Random(keys)
    scene = renderer(rng)
    for number in range(1, max_attempts):
        failed = (~scene.ok).nonzero().flatten()
        if len(failed) == 0:
            return scene
        scene.put(failed, renderer(Random(keys[failed.numpy()]).attempt(number)))
    if not bool(scene.ok.all()):
        raise RuntimeError(f"{renderer} failed {max_attempts} redraws; its rules cannot be met")
    return scene


# --- rasterisation helpers shared by the renderers ----------------------------------------
def quantize(values: Tensor) -> Tensor:
    """Round colours in [0, 1] to uint8 levels (returned as uint8)."""
    return (values.clamp(0, 1) * 255).round().to(torch.uint8)


def paste_windows(windows: Tensor, origins: Tensor, active: Tensor, size: int,
                  front: str = "last") -> Tensor:
    """Composite per-object binary windows into one instance-id map per image.

    Args:
        windows: bool ``[N, K, w, w]`` object k's pixels inside its window.
        origins: int64 ``[N, K, 2]`` canvas (row, column) of each window's top-left pixel;
            windows may hang over the canvas border.
        active: bool ``[N, K]`` which objects exist.
        size: canvas side.
        front: ``"last"``: later objects occlude earlier ones (painter's order);
            ``"first"``: earlier objects are in front (the CIS Multi-Texture generator).

    Returns:
        int64 ``[N, size, size]``: 0 where no object, else 1 + the index of the front object.
    """
    n, k, w, _ = windows.shape
    side = size + 2 * w  # padded canvas: every window lies inside it
    canvas = torch.zeros(n, side * side, dtype=torch.int64)
    origins = origins.clamp(-w, size) + w  # a window off the canvas stays off it
    offsets = torch.arange(w)
    flat = ((origins[..., 0, None, None] + offsets[:, None]) * side
            + origins[..., 1, None, None] + offsets).flatten(2)  # [N, K, w*w]
    drawn = (windows & active[..., None, None]).flatten(2)
    order = range(k) if front == "last" else reversed(range(k))
    for obj in order:  # a loop over objects, never over pixels
        index = flat[:, obj]
        canvas.scatter_(1, index, torch.where(drawn[:, obj], obj + 1, canvas.gather(1, index)))
    canvas = canvas.view(n, side, side)
    return canvas[:, w : w + size, w : w + size]


def visible_pixels(ids: Tensor, num_objects: int) -> Tensor:
    """int64 ``[N, K + 1]`` number of pixels of each id (0 = background) in each image."""
    n = ids.shape[0]
    flat = ids.flatten(1) + torch.arange(n)[:, None] * (num_objects + 1)
    return torch.bincount(flat.flatten(), minlength=n * (num_objects + 1)).view(n, -1)


def flat_colours(ids: Tensor, palette: Tensor) -> Tensor:
    """uint8 ``[N, C, H, W]``: each pixel takes its entry's colour from ``palette`` ``[N, K + 1, C]``."""
    channels = palette.shape[-1]
    index = ids.flatten(1)[:, None].expand(-1, channels, -1)
    return palette.transpose(1, 2).gather(2, index).view(-1, channels, *ids.shape[1:])


def scene_from_ids(ids: Tensor, image: Tensor, classes: Tensor, active: Tensor,
                   min_visible: int = 1, ok: Optional[Tensor] = None) -> Scene:
    """Derive the ground truth of rendered images from their id maps.

    Args:
        ids: int64 ``[N, H, W]`` from :func:`paste_windows`.
        image: uint8 ``[N, C, H, W]`` the rendered images.
        classes: int64 ``[N, K + 1]`` semantic class of each entry (entry 0 must be 0).
        active: bool ``[N, K]`` objects that were drawn.
        min_visible: an image is redrawn unless every drawn object shows at least this many
            pixels ("every visible object has pixels": no object is entirely hidden).
        ok: optional extra per-image validity from the renderer (e.g. placement succeeded).
    """
    pixels = visible_pixels(ids, active.shape[1])[:, 1:]
    fine = ((pixels >= min_visible) | ~active).all(1)
    semantic = classes.gather(1, ids.flatten(1)).view_as(ids)
    return Scene(image=image, mask=ids.to(torch.uint8), semantic=semantic.to(torch.uint8),
                 count=(pixels > 0).sum(1), ok=fine if ok is None else fine & ok)


def finish_scene(ids: Tensor, palette: Tensor, classes: Tensor, active: Tensor,
                 min_visible: int = 1, ok: Optional[Tensor] = None) -> Scene:
    """:func:`scene_from_ids` for flat-coloured objects (uint8 ``palette`` ``[N, K + 1, C]``)."""
    return scene_from_ids(ids, flat_colours(ids, palette), classes, active, min_visible, ok)


# --- datasets ---------------------------------------------------------------------------
def to_items(scene: Scene) -> List[Dict[str, Tensor]]:
    """Per-image dicts following contract 1 (float image in [0, 1], int64 ground truth)."""
    image = scene.image.float().div_(255)
    mask, semantic, count = scene.mask.long(), scene.semantic.long(), scene.count.long()
    return [{"image": image[i], "mask": mask[i], "semantic": semantic[i], "count": count[i]}
            for i in range(len(count))]


class ProceduralDataset(Dataset):
    """Item ``i`` is rendered from key ``(seed, name, split, offset + i)``.

    Args:
        renderer: maps a :class:`Random` over N keys to a :class:`Scene` of N images.
        name: dataset name (part of the key, so two datasets never share a stream).
        seed: generation seed.
        split: key stream (``train``, ``val``, ``test`` or any other name).
        length: number of items.
        offset: first index in the stream (e.g. DTI evaluates on training images 0-319).
        cache_dir: when given, the split is rendered once into uint8 ``.npy`` files there
            (memory-mapped, shared by workers); the file name encodes the renderer's config.
    """

    def __init__(self, renderer: Renderer, name: str, seed: int, split: str, length: int,
                 offset: int = 0, cache_dir: Optional[str] = None):
        self.renderer, self.name, self.seed, self.split = renderer, name, seed, split
        self.length, self.offset = length, offset
        self.cache: Optional[Dict[str, np.ndarray]] = None
        if cache_dir is not None:
            self.cache = self._load_or_build(Path(cache_dir))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, Tensor]]:
        """A whole batch rendered at once (the DataLoader calls this with a batch's indices)."""
        return to_items(self.render(indices))

    def render(self, indices: Sequence[int]) -> Scene:
        """The :class:`Scene` of the given item indices."""
        indices = [int(i) for i in indices]
        if any(not 0 <= i < self.length for i in indices):
            raise IndexError(f"index out of range for {self.name}/{self.split} of {self.length}")
        if self.cache is not None:
            rows = np.asarray(indices)
            fields = [torch.from_numpy(np.ascontiguousarray(self.cache[f][rows])) for f in FIELDS]
            return Scene(*fields, ok=torch.ones(len(rows), dtype=torch.bool))
        keys = item_keys(self.seed, self.name, self.split, [self.offset + i for i in indices])
        return render_keys(self.renderer, keys)

    def _load_or_build(self, directory: Path, chunk: int = 1024) -> Dict[str, np.ndarray]:
        digest = hashlib.sha1(repr(self.renderer).encode()).hexdigest()[:12]
        stem = f"{self.name}-{self.split}-s{self.seed}-o{self.offset}-n{self.length}-{digest}"
        paths = {f: directory / f"{stem}.{f}.npy" for f in FIELDS}
        if not all(p.exists() for p in paths.values()):
            log.info("rendering %s/%s (%d images) into the cache %s", self.name, self.split,
                     self.length, directory)
            directory.mkdir(parents=True, exist_ok=True)
            self._write(paths, chunk)
        return {f: np.load(p, mmap_mode="r") for f, p in paths.items()}

    def _write(self, paths: Dict[str, Path], chunk: int) -> None:
        first = self.render([0])
        temp = {f: p.with_suffix(".tmp.npy") for f, p in paths.items()}
        arrays = {f: np.lib.format.open_memmap(
            temp[f], mode="w+", dtype=getattr(first, f).numpy().dtype,
            shape=(self.length, *getattr(first, f).shape[1:])) for f in FIELDS}
        for start in range(0, self.length, chunk):
            scene = self.render(range(start, min(start + chunk, self.length)))
            for f in FIELDS:
                arrays[f][start : start + len(scene.count)] = getattr(scene, f).numpy()
        for f in FIELDS:
            arrays[f].flush()
            del arrays[f]
            temp[f].replace(paths[f])  # atomic: a crashed build never leaves a partial cache


# --- the datamodule base ------------------------------------------------------------------
class ProceduralDataModule(ObjectDataModule):
    """Base of the procedural benchmarks: split sizes, the evaluation protocol, the cache.

    Subclasses state their facts and ``dataset_name`` and implement :meth:`renderer`. Their
    ``__init__`` repeats these arguments with their own defaults (LightningCLI reads configs
    from signatures) and passes ``**options`` on.

    Args:
        train_size, val_size, test_size: number of images per split.
        eval_on_train: DTI-Sprites' unsupervised protocol (as its code evaluates): validation
            and test images are the *first* training images (test = training images
            0 .. test_size-1, drawn like training images). Off by default, which keeps the
            three splits disjoint.
        cache_dir: render each split once into uint8 files there (optional; generation is
            fast enough for training without it).
        batch_size, options: as in :class:`ObjectDataModule`; its ``seed`` also seeds
            generation.
    """

    def __init__(self, train_size: int, val_size: int, test_size: int,
                 eval_on_train: bool = False, cache_dir: Optional[str] = None,
                 batch_size: int = 32, **options: Any):
        super().__init__(batch_size, **options)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.eval_on_train, self.cache_dir = eval_on_train, cache_dir

    @abstractmethod
    def renderer(self, split: str) -> Renderer:
        """The renderer of ``split`` (a frozen dataclass: picklable, and its repr names it)."""

    def make_dataset(self, split: str) -> ProceduralDataset:
        stream = "train" if self.eval_on_train else split  # same images as training
        return ProceduralDataset(self.renderer(stream), type(self).dataset_name, self.seed,
                                 stream, self.sizes[split], cache_dir=self.cache_dir)
