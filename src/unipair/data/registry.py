"""The dataset registry: ``create(name_or_npz_path, **options)`` and ``list_datasets()``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unipair.data.avdigits import load_avdigits
from unipair.data.dataset import MultimodalData
from unipair.data.handwritten import load_handwritten
from unipair.data.npz import load_npz
from unipair.data.synthetic import load_synthetic
from unipair.errors import ConfigError, UnknownNameError
from unipair.registry import Registry

__all__ = ["DatasetEntry", "create", "dataset_options", "list_datasets", "register_dataset"]


@dataclass(frozen=True)
class DatasetEntry:
    factory: Callable[..., MultimodalData]
    description: str


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, description: str) -> Callable[[Callable], Callable]:
    def decorator(fn: Callable[..., MultimodalData]) -> Callable[..., MultimodalData]:
        DATASETS.register(name)(DatasetEntry(fn, description))
        return fn

    return decorator


register_dataset("handwritten", "UCI Multiple Features: 6 views of 2000 digits (embedded)")(
    load_handwritten
)
register_dataset("synthetic", "seeded generator with a chosen dominant modality")(load_synthetic)
register_dataset(
    "avdigits", "FSDD spoken digits paired with MNIST images (audio + image; needs local data)"
)(load_avdigits)


def is_npz_path(name: str) -> bool:
    return name.endswith(".npz") or Path(name).suffix == ".npz"


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_options(name: str) -> dict[str, Any]:
    """Options a dataset accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
    factory = load_npz if is_npz_path(name) else DATASETS.get(name).factory
    params = list(inspect.signature(factory).parameters.values())
    return {p.name: p.default for p in params if p.name != "path"}


def create(name: str, **options: Any) -> MultimodalData:
    """Load a registered dataset by name, or a user's ``.npz`` file by path."""
    if is_npz_path(name):
        _check_options(name, options)
        return load_npz(name, **options)
    if name not in DATASETS:
        raise UnknownNameError(DATASETS.unknown_message(name) + " (or give a path to an .npz file)")
    _check_options(name, options)
    return DATASETS.get(name).factory(**options)


def _check_options(name: str, options: dict[str, Any]) -> None:
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"dataset {name!r} has no option(s) {unknown}; allowed: {sorted(allowed)}"
        )
