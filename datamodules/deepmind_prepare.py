"""Convert a DeepMind multi-object source once into the cache datamodules/deepmind.py reads.

What each prepared cache holds (``meta.json`` repeats it as ``definition``):

* ``deepmind`` (the official TFRecords):
    - Tetrominoes: the first 60,000 records of ``tetrominoes_train.tfrecords`` (DTI's N), 35x35.
    - Multi-dSprites: the first 60,000 records of ``multi_dsprites_<variant>.tfrecords`` (DTI's N).
    - CLEVR6 (our definition, named ``clevr6-deepmind``): the first 70,000 records of
      ``clevr_with_masks_train.tfrecords`` (Slot Attention's training range), scenes with at most
      6 visible objects, rows 29:221 x columns 64:256, resized to 128x128: bilinear image
      (half-pixel centres, no antialiasing, as ``tf.image.resize``), nearest-neighbour mask.
      DTI's 34,963 images are about half of 70k, which this filter keeps, but DTI's conversion is
      unpublished: the count obtained is printed and stored, not assumed.
    - Objects Room: the first 100,000 records of ``objects_room_train.tfrecords``.
* ``ocl`` (object-centric-library HDF5; Tetrominoes, Multi-dSprites colored_on_grayscale,
  CLEVR6): every sample of the file. Its CLEVR file is already cropped to 128x128; CLEVR6 keeps
  ``num_actual_objects <= 6`` (53,483 images there). Not offered for Objects Room: that library
  re-assigns label ids at load time with a heuristic, as its stored maps do not always keep the
  four background ids.
* ``dti``: the PNG folders DTI-Sprites' authors published (``images/``, ``masks/``,
  ``sem_masks/``), as they are (CLEVR6: their 34,963 images).

Semantic classes: an object's class is its value of the spec's class features (``shape``;
``shape`` and ``material`` for CLEVR), numbered 1..C in sorted order of the values seen on
visible foreground objects; C is checked against DTI's class count (a warning, since a small
``--limit`` may not show every class). ``count`` is the number of foreground entities present
in the final (cropped) mask.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.nn import functional as F

from datamodules.deepmind import CACHE_VERSION, SPECS, MultiObjectSpec
from datamodules.real_data import open_image
from datamodules.tfrecord import BytesList, FloatList, parse_example, read_records

DEFAULT_LIMITS = {("tetrominoes", "deepmind"): 60_000, ("colored_on_grayscale", "deepmind"): 60_000,
                  ("colored_on_colored", "deepmind"): 60_000, ("clevr6", "deepmind"): 70_000,
                  ("objects_room", "deepmind"): 100_000}
CLEVR_CROP = (slice(29, 221), slice(64, 256))


@dataclass
class Scene:
    """One decoded sample before caching."""

    image: np.ndarray  # [H, W, 3] uint8
    ids: np.ndarray  # [H, W] uint8 entity ids
    codes: Optional[np.ndarray] = None  # [K] int64 class code per entity
    semantic: Optional[np.ndarray] = None  # [H, W] uint8, when the source stores classes per pixel
    objects: Optional[int] = None  # visible foreground objects, from the source's visibility


def tfrecord_scenes(path: Path, spec: MultiObjectSpec, verify: bool = True) -> Iterator[Scene]:
    """Decode DeepMind TFRecords: 1-byte-string images and masks, masks to entity ids."""
    (h, w), k = spec.raw_size, spec.entities
    for index, record in enumerate(read_records(path, verify=verify)):
        example = parse_example(record)
        image = _values(example, "image", h * w * 3, path, index).reshape(h, w, 3)
        masks = _values(example, "mask", k * h * w, path, index)
        if spec.mask_layout == "KHW":
            masks = masks.reshape(k, h, w)
        else:  # Multi-dSprites stores [H, W, K, 1]; DeepMind's reader transposes it
            masks = masks.reshape(h, w, k).transpose(2, 0, 1)
        codes = None
        if spec.class_features:
            codes = _pack([_values(example, f, k, path, index) for f in spec.class_features])
        visibility = example.get("visibility")
        objects = None
        if visibility is not None:
            objects = int(round(float(visibility.values.sum()))) - spec.num_background
        yield Scene(image, masks.argmax(0).astype(np.uint8), codes, None, objects)


def hdf5_scenes(path: Path, spec: MultiObjectSpec, block: int = 256) -> Iterator[Scene]:
    """Read the object-centric-library layout: ``image`` [N,H,W,3], ``mask`` [N,H,W,1] label maps."""
    import h5py  # only this source needs it

    try:
        data = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"cannot open {path} as HDF5 (corrupt or not the object-centric-library file): "
                         f"{error}") from error
    with data:
        _check_hdf5_rows(data, path, spec)
        for start in range(0, data["image"].shape[0], block):
            window = slice(start, start + block)
            images, labels = data["image"][window], data["mask"][window]
            labels = labels.reshape(labels.shape[:3])
            _check_entity_ids(labels, spec, path, start)
            codes = [np.asarray(data[f][window]).reshape(len(images), -1) for f in spec.class_features]
            if "num_actual_objects" in data:
                objects = np.asarray(data["num_actual_objects"][window]).reshape(-1)
            else:
                objects = [None] * len(images)
            for j in range(len(images)):
                packed = _pack([c[j] for c in codes]) if codes else None
                yield Scene(images[j], labels[j].astype(np.uint8), packed, None,
                            None if objects[j] is None else int(objects[j]))


def _check_hdf5_rows(data, path: Path, spec: MultiObjectSpec) -> None:
    """Every dataset read holds one row per image (a short one would end in an IndexError)."""
    names = ("image", "mask", *spec.class_features)
    missing = [n for n in names if n not in data]
    if missing:
        raise KeyError(f"{path}: no dataset(s) {missing}; found {sorted(data)}")
    rows = data["image"].shape[0]
    for name in names[1:] + (("num_actual_objects",) if "num_actual_objects" in data else ()):
        if data[name].shape[0] != rows:
            raise ValueError(f"{path}: dataset '{name}' has {data[name].shape[0]} rows but 'image' has "
                             f"{rows}; is the file complete?")


def _check_entity_ids(labels: np.ndarray, spec: MultiObjectSpec, path: Path, start: int) -> None:
    """Entity ids index the per-entity features, so each must be below ``spec.entities``."""
    bad = np.flatnonzero((labels.reshape(len(labels), -1) >= spec.entities).any(1))
    if bad.size:
        record = start + int(bad[0])
        raise ValueError(f"{path}: record {record}: mask holds entity id {int(labels[bad[0]].max())}, "
                         f"but this dataset has {spec.entities} entities (ids 0..{spec.entities - 1}); "
                         "is this the right file?")


def png_scenes(directory: Path) -> Iterator[Scene]:
    """Read DTI-Sprites' folders: ``images/{i}.png``, ``masks/{i}.png``, ``sem_masks/{i}.png``."""
    count = len(list((directory / "images").glob("*.png")))
    if count == 0:
        raise FileNotFoundError(f"no images/<i>.png under {directory}")
    for i in range(count):  # converted as DTI's own reader does: RGB images, "L" masks
        name = f"{i}.png"
        yield Scene(_png(directory / "images" / name, "RGB"), _png(directory / "masks" / name, "L", True),
                    semantic=_png(directory / "sem_masks" / name, "L", True))


def _png(path: Path, mode: str, labels: bool = False) -> np.ndarray:
    return np.asarray(open_image(path, mode, labels))


def crop_resize_clevr(scene: Scene, size: int) -> Scene:
    """CLEVR6 geometry: crop rows 29:221 and columns 64:256, resize to ``size`` (see table)."""
    image = torch.from_numpy(np.ascontiguousarray(scene.image[CLEVR_CROP])).permute(2, 0, 1)[None].float()
    image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    ids = torch.from_numpy(np.ascontiguousarray(scene.ids[CLEVR_CROP]))[None, None].float()
    ids = F.interpolate(ids, size=(size, size), mode="nearest-exact")
    scene.image = image[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    scene.ids = ids[0, 0].byte().numpy()
    return scene


def prepare(spec_key: str, source: str, input_path: Path, output: Path, limit: Optional[int] = None,
            verify: bool = True, log: Callable[[str], None] = print) -> dict:
    """Stream ``input_path`` into the cache folder ``output``; returns the written ``meta``.

    Args:
        spec_key: a key of :data:`datamodules.deepmind.SPECS`.
        source: ``deepmind`` (TFRecord file), ``ocl`` (HDF5 file) or ``dti`` (PNG folder).
        limit: source records to read (default: :data:`DEFAULT_LIMITS`, else all).
        verify: check TFRecord CRC32C checksums.
    """
    spec = SPECS[spec_key]
    limit = limit if limit is not None else DEFAULT_LIMITS.get((spec_key, source))
    scenes = {"deepmind": lambda: tfrecord_scenes(input_path, spec, verify),
              "ocl": lambda: hdf5_scenes(input_path, spec),
              "dti": lambda: png_scenes(input_path)}[source]()
    writer, codes, present = _CacheWriter(output, spec.image_size, with_semantic=spec.num_classes > 0), [], []
    read, start = 0, time.time()
    for scene in itertools.islice(scenes, limit):
        read += 1
        if scene.objects is not None and scene.objects > spec.max_objects:
            continue  # CLEVR6's filter; a no-op for the other benchmarks
        if scene.image.shape[:2] == spec.raw_size != (spec.image_size, spec.image_size):
            scene = crop_resize_clevr(scene, spec.image_size)  # only CLEVR is resized
        _check_scene(scene, spec, input_path, read - 1)
        writer.append(scene, _count(scene.ids, spec.num_background))
        if scene.codes is not None:
            codes.append(scene.codes)
            present.append(np.bincount(scene.ids.ravel(), minlength=len(scene.codes))[:len(scene.codes)] > 0)
        if read % 5000 == 0:
            log(f"  {read} records read, {writer.count} kept ({read / (time.time() - start):.0f} records/s)")
    if writer.count == 0:
        writer.discard()
        raise ValueError(f"{input_path}: prepared 0 images from {read} records (an empty or wrong "
                         f"file, or none passes {spec_key}'s filter); no cache written")
    classes = _class_map(writer, np.array(codes), np.array(present), spec, log) if codes else None
    definition = _definition(spec_key, source, input_path, limit)
    meta = {"version": CACHE_VERSION, "spec": spec_key, "source": source, "definition": definition,
            "input": str(input_path), "records_read": read, "num_images": writer.count,
            "image_size": spec.image_size, "num_classes": spec.num_classes, "classes": classes}
    writer.finish(meta)
    log(f"  prepared {writer.count} images from {read} records into {output}")
    return meta


class _CacheWriter:
    """Appends arrays to raw part files, then writes ``.npy`` files and ``meta.json`` (last)."""

    def __init__(self, directory: Path, size: int, with_semantic: bool):
        self.directory, self.size, self.count = Path(directory), size, 0
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "meta.json").unlink(missing_ok=True)  # incomplete until finish()
        self.shapes = {"image": (size, size, 3), "mask": (size, size), "count": ()}
        if with_semantic:
            self.shapes["semantic"] = (size, size)
        self.parts = {n: open(self.directory / f".{n}.part", "wb") for n in self.shapes}

    def append(self, scene: Scene, count: int) -> None:
        values = {"image": scene.image, "mask": scene.ids, "count": np.uint8(count)}
        if "semantic" in self.parts:  # zeros until _class_map fills it, unless the source has it
            values["semantic"] = scene.semantic if scene.semantic is not None else np.zeros_like(scene.ids)
        for name, part in self.parts.items():
            part.write(np.ascontiguousarray(values[name], dtype=np.uint8).tobytes())
        self.count += 1

    def read_part(self, name: str) -> np.ndarray:
        self.parts[name].flush()
        shape = (self.count, *self.shapes[name])
        return np.memmap(self.directory / f".{name}.part", np.uint8, "r+", shape=shape)

    def discard(self) -> None:
        """Close and delete the part files (nothing was worth caching)."""
        for name, part in self.parts.items():
            part.close()
            (self.directory / f".{name}.part").unlink()

    def finish(self, meta: dict) -> None:
        for name, part in self.parts.items():
            part.close()
            source = self.directory / f".{name}.part"
            target = np.lib.format.open_memmap(self.directory / f"{name}.npy", "w+", np.uint8,
                                               (self.count, *self.shapes[name]))
            raw = np.memmap(source, np.uint8, "r", shape=target.shape) if self.count else target
            for start in range(0, self.count, 4096):
                target[start:start + 4096] = raw[start:start + 4096]
            target.flush()
            del target, raw
            source.unlink()
        (self.directory / "meta.json").write_text(json.dumps(meta, indent=1))


def _class_map(writer: _CacheWriter, codes: np.ndarray, present: np.ndarray, spec: MultiObjectSpec,
               log: Callable[[str], None]) -> dict:
    """Number the class codes of visible foreground objects 1..C and write ``semantic``."""
    foreground = present.copy()
    foreground[:, :spec.num_background] = False
    values = np.unique(codes[foreground])
    if len(values) != spec.num_classes - 1:
        log(f"  warning: {len(values)} object classes seen, DTI counts {spec.num_classes - 1}")
    entity_class = np.searchsorted(values, codes) + 1
    entity_class[:, :spec.num_background] = 0
    entity_class = np.where(present, entity_class, 0).astype(np.uint8)
    ids, semantic = writer.read_part("mask"), writer.read_part("semantic")
    for start in range(0, writer.count, 1024):
        rows = np.arange(start, min(start + 1024, writer.count))
        semantic[rows] = entity_class[rows[:, None, None], ids[rows]]
    semantic.flush()
    return {"features": list(spec.class_features), "codes": values.tolist(), "found": int(len(values))}


def _values(example: dict, name: str, expected: int, path: Path, index: int) -> np.ndarray:
    feature = example.get(name)
    if feature is None:
        raise ValueError(f"{path}: record {index} has no feature '{name}' (found {sorted(example)})")
    values = feature.to_uint8() if isinstance(feature, BytesList) else np.rint(feature.values)
    if values.size != expected:
        raise ValueError(f"{path}: record {index}: feature '{name}' has {values.size} values, expected "
                         f"{expected}; is this the right file (and Multi-dSprites variant)?")
    return values if isinstance(feature, BytesList) else values.astype(np.int64)


def _pack(codes: List[np.ndarray]) -> np.ndarray:
    """Combine per-entity codes of several features (each < 2**16) into one int64 code."""
    packed = np.zeros(np.size(codes[0]), dtype=np.int64)
    for values in codes:  # float-coded features (Multi-dSprites, Tetrominoes) hold whole numbers
        packed = packed * 65536 + np.rint(np.asarray(values, dtype=np.float64)).astype(np.int64).ravel()
    return packed


def _count(ids: np.ndarray, num_background: int) -> int:
    return int((np.bincount(ids.ravel())[num_background:] > 0).sum())


def _check_scene(scene: Scene, spec: MultiObjectSpec, path: Path, index: int) -> None:
    size = spec.image_size
    if scene.image.shape != (size, size, 3) or scene.ids.shape != (size, size):
        raise ValueError(f"{path}: sample {index} is {scene.image.shape}, expected ({size}, {size}, 3)")


def _definition(spec_key: str, source: str, input_path: Path, limit: Optional[int]) -> str:
    head = f"first {limit} records of" if limit else "all samples of"
    text = f"{spec_key} from {head} {input_path.name} ({source})"
    if spec_key == "clevr6" and source != "dti":
        text += "; scenes with <= 6 visible objects"
        if source == "deepmind":
            text += "; crop rows 29:221 x cols 64:256; resize 128 (bilinear image, nearest mask)"
    return text
