"""Dataset names -> datamodule classes, discovered from ``dataset_name`` class attributes.

Every concrete datamodule sets ``dataset_name``; the gallery and the ``data`` command look
datasets up here, so adding a benchmark needs no edit anywhere else.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Dict, Type

import datamodules
from datamodules.base import ObjectDataModule


@lru_cache(maxsize=1)
def registry() -> Dict[str, Type[ObjectDataModule]]:
    """All datamodules by ``dataset_name``, importing every module of the package once."""
    for info in pkgutil.iter_modules(datamodules.__path__):
        importlib.import_module(f"datamodules.{info.name}")
    found: Dict[str, Type[ObjectDataModule]] = {}
    for cls in _subclasses(ObjectDataModule):
        name = cls.__dict__.get("dataset_name")
        if name:
            if name in found and found[name] is not cls:
                raise RuntimeError(f"dataset name '{name}' is used by {found[name]} and {cls}")
            found[name] = cls
    return dict(sorted(found.items()))


def get(name: str) -> Type[ObjectDataModule]:
    """The datamodule class of dataset ``name``; a clear error listing the known names."""
    known = registry()
    if name not in known:
        raise KeyError(f"unknown dataset '{name}'; known: {', '.join(known)}")
    return known[name]


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)
