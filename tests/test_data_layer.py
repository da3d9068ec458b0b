"""The data layer: import direction, the datamodule's named requests (sample_batch, labelled subset)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import torch
from jsonargparse import ArgumentParser
from torch.utils.data import default_collate

from datamodules.base import ObjectDataModule
from datamodules.registry import registry
from datamodules.textured_shape import TexturedShapeDataModule

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("datamodules", "objdecomp")


def tiny(**options) -> TexturedShapeDataModule:
    return TexturedShapeDataModule(image_size=16, train_size=32, val_size=8, test_size=8, **options)


# --- import direction and cycles ---------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(name: str, path: Path, known: Dict[str, Path]) -> Iterator[str]:
    """Modules ``path`` imports anywhere in its body (module level or inside functions)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in known else base


def _project_imports() -> Dict[str, List[str]]:
    known = {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    return {name: sorted(set(_imported(name, path, known)) - {name}) for name, path in known.items()}


def test_datamodules_never_import_objdecomp():
    wrong = {name: [m for m in imports if m.split(".")[0] == "objdecomp"]
             for name, imports in _project_imports().items() if name.split(".")[0] == "datamodules"}
    offenders = {name: found for name, found in wrong.items() if found}
    assert not offenders, f"the data layer imports objdecomp: {offenders}"


def test_no_import_cycle_between_project_modules():
    imports = _project_imports()
    graph = {name: [m for m in found if m in imports] for name, found in imports.items()}
    state: Dict[str, str] = {}  # "open" while on the current path, "done" after

    def cycle_from(node: str, path: List[str]) -> List[str]:
        state[node] = "open"
        for child in graph[node]:
            if state.get(child) == "open":
                return path[path.index(child):] + [child]
            if child not in state and (found := cycle_from(child, path + [child])):
                return found
        state[node] = "done"
        return []

    for start in graph:
        if start not in state:
            assert not (cycle := cycle_from(start, [start])), " -> ".join(cycle)


# --- every datamodule takes the base options from its config ---------------------------------
@pytest.mark.parametrize("name", list(registry()))
def test_every_datamodule_takes_the_loader_and_labelled_subset_options(name):
    cls = registry()[name]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ObjectDataModule, "data")
    config = parser.parse_args([f"--data={cls.__module__}.{cls.__name__}", "--data.labelled_subset=3",
                                "--data.labelled_split=val", "--data.eval_batch_size=2"])
    assert {k: config.data.init_args[k] for k in ("labelled_subset", "labelled_split", "eval_batch_size",
                                                  "num_workers", "seed")} == dict(
        labelled_subset=3, labelled_split="val", eval_batch_size=2, num_workers=0, seed=0)


# --- sample_batch ------------------------------------------------------------------------------
def test_sample_batch_is_the_first_items_of_the_split():
    data = tiny()
    batch = data.sample_batch("val", 3)  # sets the split up itself
    expected = default_collate([data.make_dataset("val")[i] for i in range(3)])
    assert batch.keys() == expected.keys()
    assert all(torch.equal(batch[k], expected[k]) for k in batch)
    assert batch["image"].device.type == "cpu"
    assert len(data.sample_batch("test", 100)["image"]) == 8  # at most the whole split
    assert data.sample_batch("nonexistent", 3) is None
    assert TexturedShapeDataModule(16, val_size=0).sample_batch("val", 3) is None  # empty split


def test_sample_batch_spread_takes_evenly_spaced_items():
    data = tiny()
    split = data.make_dataset("test")  # 8 images: spread picks 0, 3, 7 (linspace, rounded down)
    batch = data.sample_batch("test", 3, spread=True)
    expected = default_collate([split[i] for i in (0, 3, 7)])
    assert torch.equal(batch["image"], expected["image"])


# --- the labelled subset (ReDO's supervised baseline) ------------------------------------------
def _images(data: ObjectDataModule, split: str) -> torch.Tensor:
    return data.sample_batch(split, 10_000)["image"]


def test_labelled_subset_trains_on_n_seeded_images_cycled_to_min_epoch_items():
    data = tiny(labelled_subset=5, min_epoch_items=12, batch_size=4)
    data.setup("fit")
    train, source = _images(data, "train"), _images(tiny(), "train")
    chosen = torch.randperm(32, generator=torch.Generator().manual_seed(0))[:5]  # as before the move
    assert torch.equal(train, source[chosen].repeat(3, 1, 1, 1)[:12])
    assert torch.equal(_images(data, "val"), _images(tiny(), "val"))  # validation untouched
    again = tiny(labelled_subset=5, min_epoch_items=12)
    assert torch.equal(_images(again, "train"), train)  # the same choice for the same seed
    other = tiny(labelled_subset=5, min_epoch_items=12, labelled_seed=1)
    assert not torch.equal(_images(other, "train"), train)
    assert len(_images(tiny(labelled_subset=20, min_epoch_items=12), "train")) == 20  # N > min


def test_labelled_subset_of_val_validates_on_the_rest():
    data = tiny(labelled_subset=5, labelled_split="val", min_epoch_items=5, batch_size=4)
    data.setup("fit")
    train, val, source = _images(data, "train"), _images(data, "val"), _images(tiny(), "val")
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(train, source[order[:5]])
    assert torch.equal(val, source[order[5:].sort().values])  # the other 3, in index order
    assert len(torch.cat([train, val]).unique(dim=0)) == 8


def test_evaluation_reads_whole_splits_whatever_the_labelled_subset():
    data = tiny(labelled_subset=5, labelled_split="val", min_epoch_items=5, batch_size=4)
    data.setup("fit")
    assert [len(data.train_dataloader().dataset), len(data.val_dataloader().dataset)] == [5, 3]
    for split, size in (("train", 32), ("val", 8), ("test", 8)):  # objdecomp test --eval_split
        data.test_split = split
        data.setup("test")
        assert len(data.test_dataloader().dataset) == size


def test_labelled_subset_errors_name_the_problem():
    with pytest.raises(ValueError, match="labelled_split must be 'train' or 'val'"):
        tiny(labelled_subset=5, labelled_split="test")
    with pytest.raises(ValueError, match="labelled_subset=9 must be between 1 and the 8 images of the 'val'"):
        tiny(labelled_subset=9, labelled_split="val").setup("fit")
