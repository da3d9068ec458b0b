"""Where each real dataset comes from and how it is arranged for its datamodule (``objdecomp data``).

``RECIPES[name][source]``: the first source of a dataset is its default. Every URL is the one the
dataset's authors (or the paper's authors, for their own copies and split lists) publish; the
checksum policy is in datamodules/download.py. :func:`prepare` obtains and arranges one dataset.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from datamodules.download import (Combination, Log, PrepareOptions, Recipe, Resource, log_to_stderr,
                                  obtain)
from datamodules.paths import data_root

# The finish steps import the datamodules when they run: listing the catalogue
# (``objdecomp data --list``) then does not load Lightning (2 s of the command's 4).

GCS = "https://storage.googleapis.com/multi-object-datasets/"  # DeepMind multi_object_datasets README
OCL = "https://data-download.compute.dtu.dk/multi_object_datasets/"  # object-centric-library download_data.py
GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="
REDO = "https://raw.githubusercontent.com/mickaelChen/ReDO/"  # pinned commits below
FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
TORCHVISION = "pinned in torchvision 0.29 datasets"
OCL_SUMS = "published in object-centric-library check_data.py"
THIRD_PARTY = "pinned and checked by public third-party loaders; not published by the authors"


def _multi_object(name: str, source: str, input_name: Callable[[PrepareOptions], str]):
    """Finish step: convert the source into the datamodule's prepared cache."""

    def finish(root: Path, options: PrepareOptions, log: Log) -> None:
        from datamodules.deepmind_prepare import prepare as convert
        from datamodules.registry import get

        kwargs = {"variant": options.variant} if name == "deepmind_multi_dsprites" else {}
        module = get(name)(root=str(root), source=source, **kwargs)
        path = Path(options.local_copy) if options.local_copy else root / "downloads" / input_name(options)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found")
        convert(module.spec_key, source, path, module.cache_dir, options.limit, options.verify_records, log)

    return finish


def _deepmind_recipes(name: str, tfrecord: Callable[[PrepareOptions], str],
                      ocl: Optional[str] = None) -> Dict[str, Recipe]:
    """The official TFRecords, then the object-centric-library copy and DTI's PNGs where they exist."""
    recipes = {"deepmind": Recipe(
        lambda a: [Resource(GCS + tfrecord(a), Path(tfrecord(a)).name)],
        _multi_object(name, "deepmind", lambda a: Path(tfrecord(a)).name),
        f"official TFRecords ({GCS}...), converted once", direct_input=True)}
    if ocl:
        recipes["ocl"] = Recipe(
            lambda a: [Resource(OCL + ocl, ocl, sha256=OCL_SHA256[ocl], checksum_from=OCL_SUMS)],
            _multi_object(name, "ocl", lambda a: ocl), "object-centric-library HDF5 repackaging",
            direct_input=True)
    if name in DTI_DRIVE:
        recipes["dti"] = Recipe(lambda a: [_drive(name, extract_to="downloads")],
                                _multi_object(name, "dti", lambda a: DTI_DRIVE[name][1]),
                                "DTI-Sprites authors' PNG folders (Google Drive)", direct_input=True)
    return recipes


def _drive(key: str, extract_to: str = ".") -> Resource:
    """A zip DTI-Sprites' authors share on Google Drive (no published checksum)."""
    drive_id, folder = DTI_DRIVE[key]
    return Resource(GDRIVE + drive_id, f"{folder}.zip", extract_to=extract_to)


def _hoist(folder: Path, root: Path) -> None:
    """Move the contents of ``folder`` (an archive's top folder) up into ``root``."""
    if folder.is_dir():
        for child in folder.iterdir():
            destination = root / child.name
            if destination.exists():
                shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
            shutil.move(str(child), str(destination))
        folder.rmdir()


def _report(name: str, counts: Dict[str, int], expected: Dict[str, int], log: Log) -> None:
    for split, count in counts.items():
        paper = expected.get(split)
        log(f"  {name} {split}: {count} images" + (f" (paper: {paper})" if paper else ""))


def _finish_gtsrb(root: Path, options: PrepareOptions, log: Log) -> None:
    from datamodules.registry import get

    _report("gtsrb8", {"all": len(get("gtsrb8")(root=str(root)).samples())}, {"all": 10_650}, log)


def _finish_redo(name: str, hoist: Optional[str] = None, expected: Optional[Dict[str, int]] = None):
    def finish(root: Path, options: PrepareOptions, log: Log) -> None:
        from datamodules.registry import get

        if hoist:
            _hoist(root / hoist, root)
        module = get(name)(root=str(root))
        counts = {s: len(module.samples(s)) for s in ("train", "val", "test")}
        _report(name, counts, expected or {}, log)
        wrong = {s: n for s, n in counts.items() if (expected or {}).get(s, n) != n}
        if wrong:
            raise RuntimeError(f"{name}: split sizes {wrong} differ from the paper's {expected}; "
                               "the split files may be damaged")
    return finish


def _nothing(root: Path, options: PrepareOptions, log: Log) -> None:
    """Nothing to arrange: the files are where the datamodule reads them."""


OCL_SHA256 = {  # object-centric-library check_data.py
    "clevr_10-full.hdf5": "419dd56bc7791541daaa246d4b60a00ab3d9c0b9a1330c8b8a015350130240c2",
    "multidsprites_colored_on_grayscale-full.hdf5":
        "a16e5777790adce45e83734b9693061b84725b341fb900439fe64bb08d9b2530",
    "tetrominoes-full.hdf5": "de19edfe00e6322058edbad25c9b3a8c55f7112cf9dac1565ccd87a2cdb87ffd",
}
DTI_DRIVE = {  # monniert/dti-sprites download_data.sh: Google Drive id, top folder of the zip
    "clevr6": ("12c7ZRNWKzqosz5aUOfL0XBmLHrcN240r", "clevr6"),
    "deepmind_multi_dsprites": ("110RrDlhx_fjXymzmTx1nkC3ZMPmMXjsv", "dsprites_gray"),
    "deepmind_tetrominoes": ("1unCVwJbytG1wHZCQfk41otdtmR8yU1AH", "tetrominoes"),
    "gtsrb8": ("1d5rlgYeH087oT6AnTNAHtwrnRXv3WeRR", "GTSRB"),
    "weizmann_horse": ("1fQSWQUCwIB6zkA65D4wlbaGmIg8iO6Ja", "weizmann_horse"),
    "santaphoto": ("1tv5-_Iz-LD6-FqFxF67py9ot97BOZbUc", "santaphoto"),
    "weddingkiss": ("1OCLvojYDomLnI6zP6QghgIkZ8PWwmqCD", "weddingkiss"),
}
GTSRB = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/GTSRB_Final_Training_Images.zip"
SVHN_MD5 = {"train": "e26dedcc434d2e4c54c9b2d4a06d8373", "test": "eb5a983be6a315427106f1b164d9cef3",
            "extra": "a93ce644f1a588dc4d68dda5feec44a7"}
CUB = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
CUB_SEGMENTATIONS = "https://data.caltech.edu/records/w9d68-gec53/files/segmentations.tgz?download=1"
CUB_SPLIT = "93e4a6e2c5654c0f5b090aafbd4c25ccb0969815/datasplits/cub/train_val_test_split.txt"
LFW = "http://vis-www.cs.umass.edu/lfw/"
LFW_SPLITS = {"train": "e41d9e010d1e14926d423dba957ec917348912b8/datasplits/lfw-funneled/train.txt",
              "val": "e41d9e010d1e14926d423dba957ec917348912b8/datasplits/lfw-funneled/val.txt",
              "test": "a9edfac03aff5249c05b3c6f415c956efc6416bd/datasplits/LFW/test.txt"}


def _flowers(options: PrepareOptions) -> List[Resource]:
    return [Resource(FLOWERS + "102flowers.tgz", "102flowers.tgz", md5="52808999861908f626f3c1f4e79d11fa",
                     checksum_from=TORCHVISION, extract_to="."),
            Resource(FLOWERS + "102segmentations.tgz", "102segmentations.tgz",
                     md5="51375996b6c4f367a4b9f4492d7ecef5", checksum_from=THIRD_PARTY, extract_to="."),
            Resource(FLOWERS + "setid.mat", "setid.mat", md5="a5357ecc9cb78c4bef273ce3793fc85c",
                     checksum_from=TORCHVISION, folder="."),
            Resource(FLOWERS + "imagelabels.mat", "imagelabels.mat", md5="e0620be6f572b9609742df49c70aed4d",
                     checksum_from=TORCHVISION, folder=".")]


def _cub(options: PrepareOptions) -> List[Resource]:
    return [Resource(CUB, "CUB_200_2011.tgz", md5="97eceeb196236b17998738112f37df78",
                     checksum_from=THIRD_PARTY, extract_to="."),
            Resource(CUB_SEGMENTATIONS, "segmentations.tgz", extract_to="."),
            Resource(REDO + CUB_SPLIT, "train_val_test_split.txt", folder=".")]


def _lsun(options: PrepareOptions) -> List[Resource]:
    """LSUN object categories (dl.yf.io): ``--variant <category>``, else PerturbGAN's four."""
    from datamodules.lsun import CATEGORIES, PERTURBGAN_CATEGORIES
    chosen = [options.variant] if options.variant in CATEGORIES else list(PERTURBGAN_CATEGORIES)
    return [Resource(f"http://dl.yf.io/lsun/objects/{c}.zip", f"{c}.zip", extract_to=".")
            for c in chosen]


def _lfw(options: PrepareOptions) -> List[Resource]:
    return [Resource(LFW + "lfw-funneled.tgz", "lfw-funneled.tgz", md5="1b42dfed7d15c9b2dd63d5e5840c86ad",
                     checksum_from=TORCHVISION, extract_to="."),
            Resource(LFW + "part_labels/parts_lfw_funneled_gt_images.tgz", "parts_lfw_funneled_gt_images.tgz",
                     md5="3e7e26e801c3081d651c8c2ef3c45cfc", checksum_from=THIRD_PARTY, extract_to=".")] + [
            Resource(REDO + path, f"{split}.txt", folder=".") for split, path in LFW_SPLITS.items()]


def _svhn(options: PrepareOptions) -> List[Resource]:
    return [Resource(f"http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat", f"{split}_32x32.mat",
                     md5=md5, checksum_from=TORCHVISION, folder=".") for split, md5 in SVHN_MD5.items()]


RECIPES: Dict[str, Dict[str, Union[Recipe, Combination]]] = {
    "clevr6": _deepmind_recipes(
        "clevr6", lambda a: "clevr_with_masks/clevr_with_masks_train.tfrecords", "clevr_10-full.hdf5"),
    "deepmind_multi_dsprites": _deepmind_recipes(
        "deepmind_multi_dsprites", lambda a: f"multi_dsprites/multi_dsprites_{a.variant}.tfrecords",
        "multidsprites_colored_on_grayscale-full.hdf5"),
    "deepmind_tetrominoes": _deepmind_recipes(
        "deepmind_tetrominoes", lambda a: "tetrominoes/tetrominoes_train.tfrecords", "tetrominoes-full.hdf5"),
    "objects_room": _deepmind_recipes("objects_room", lambda a: "objects_room/objects_room_train.tfrecords"),
    "gtsrb8": {
        "official": Recipe(lambda a: [Resource(GTSRB, Path(GTSRB).name, extract_to=".")], _finish_gtsrb,
                           "GTSRB Final_Training images (sid.erda.dk), the 8 classes read in place"),
        "dti": Recipe(lambda a: [_drive("gtsrb8")], _finish_gtsrb,
                      "DTI-Sprites authors' GTSRB folder (Google Drive)")},
    "svhn": {"official": Recipe(_svhn, _nothing,
                                "cropped digits train/test/extra .mat (ufldl.stanford.edu)")},
    "flying_animals": {"authors": Recipe(
        lambda a: [Resource(GDRIVE + "1xs9CdR8HC_RxfuEbZnD_hmMqQusAuhbO", "data.zip", extract_to=".")],
        _nothing, "CIS authors' Flying Animals photographs: data/{foregrounds,masks,backgrounds} "
                  "(the Google Drive link of their README; no published checksum)")},
    "weizmann_horse": {"dti": Recipe(
        lambda a: [_drive("weizmann_horse")], lambda root, options, log: _hoist(root / "weizmann_horse", root),
        "DTI-Sprites authors' images/ + masks/ copy (Google Drive; the original site is gone)")},
    "image_folder": {tag: Recipe(lambda a, t=tag: [_drive(t)], _nothing,
                                 f"Instagram #{tag} collection of DTI-Sprites (Google Drive)")
                     for tag in ("santaphoto", "weddingkiss")},
    "flowers": {"official": Recipe(_flowers, _finish_redo("flowers", expected={"train": 6149, "val": 1020,
                                                                               "test": 1020}),
                                   "Oxford 102 images, segmentations, set ids, labels (robots.ox.ac.uk)")},
    "cub": {"official": Recipe(_cub, _finish_redo("cub", hoist="CUB_200_2011",
                                                  expected={"train": 10_000, "val": 788, "test": 1000}),
                               "CUB-200-2011 + segmentations (CaltechDATA), ReDO's split list (GitHub)")},
    "lfw": {"official": Recipe(_lfw, _finish_redo("lfw", expected={"val": 1327, "test": 1600}),
                               "LFW funneled + part labels (vis-www.cs.umass.edu, often offline: "
                               "use --from), ReDO's split lists (GitHub)")},
    "lsun": {"official": Recipe(_lsun, _nothing, "LSUN object categories as lmdb databases "
                                "(dl.yf.io; --variant car|horse|chair|bird|..., default those four)")},
    "flowers_lfw": {"official": Combination(("flowers", "lfw"),
                                            "runs `flowers` and `lfw` (the datamodule reads both folders)")},
}


def choose(name: str, source: Optional[str] = None) -> Tuple[str, Union[Recipe, Combination]]:
    """The source (default: the first listed) and recipe of dataset ``name``.

    Raises:
        ValueError: an unknown dataset or source, naming where the choices are.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown dataset {name!r}; `objdecomp data --list` shows them")
    sources = RECIPES[name]
    source = source or next(iter(sources))
    if source not in sources:
        raise ValueError(f"{name}: unknown source {source!r}; choose from {', '.join(sources)}")
    return source, sources[source]


def prepare(name: str, options: PrepareOptions = PrepareOptions(), log: Log = log_to_stderr) -> Path:
    """Obtain and arrange dataset ``name`` for its datamodule; returns the folder it is in.

    Raises:
        ValueError: an unknown dataset or source.
        DownloadError: a failed download or a checksum mismatch.
    """
    source, recipe = choose(name, options.source)
    if isinstance(recipe, Combination):  # each part in its own folder, under ``root`` if given
        root = Path(options.root).expanduser() if options.root else data_root()
        log(f"{name} ({source}) -> {', '.join(str(root / part) for part in recipe.parts)}")
        for part in recipe.parts:
            part_root = str(root / part) if options.root else None
            prepare(part, dataclasses.replace(options, source=None, root=part_root), log)
    else:
        root = Path(options.root).expanduser() if options.root else data_root() / name
        log(f"{name} ({source}) -> {root}")
        if not (recipe.direct_input and options.local_copy):
            obtain(recipe, options, root, log)
        recipe.finish(root, options, log)
    log(f"{name}: ready in {root}")
    return root
