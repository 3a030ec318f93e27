"""The dataset registry: ``create(name_or_npz_path, **options)`` and ``list_datasets()``.

The built-in loaders are registered as ``"module:function"`` paths and imported on first use,
so importing the registry and listing names load no loader (nor torch, scikit-learn).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipair.errors import ConfigError, UnknownNameError
from unipair.registry import Registry

if TYPE_CHECKING:
    from unipair.data.dataset import MultimodalData

__all__ = ["DatasetEntry", "create", "dataset_options", "list_datasets", "register_dataset"]

_NPZ_LOADER = "unipair.data.npz:load_npz"
_MANIFEST_LOADER = "unipair.data.manifest:load_manifest"
_PREPARED_LOADER = "unipair.data.prepared:load_prepared"


def _resolve(loader: Callable[..., MultimodalData] | str) -> Callable[..., MultimodalData]:
    """The loader itself; a ``"module:function"`` path is imported here, on first use."""
    if callable(loader):
        return loader
    module, _, name = loader.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its loader (or the loader's ``"module:function"`` path)."""

    loader: Callable[..., MultimodalData] | str
    description: str

    @property
    def factory(self) -> Callable[..., MultimodalData]:
        return _resolve(self.loader)


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, description: str) -> Callable[[Callable], Callable]:
    def decorator(fn: Callable[..., MultimodalData]) -> Callable[..., MultimodalData]:
        DATASETS.register(name)(DatasetEntry(fn, description))
        return fn

    return decorator


DATASETS.register("handwritten")(
    DatasetEntry(
        "unipair.data.handwritten:load_handwritten",
        "UCI Multiple Features: 6 views of 2000 digits (embedded)",
    )
)
DATASETS.register("synthetic")(
    DatasetEntry(
        "unipair.data.synthetic:load_synthetic", "seeded generator with a chosen dominant modality"
    )
)
DATASETS.register("interaction")(
    DatasetEntry(
        "unipair.data.synthetic:load_interaction",
        "two modalities whose label mixes per-modality evidence with a cross-modal product",
    )
)
for _name, _loader, _about in (
    (
        "crema_d",
        "unipair.data.benchmarks.crema_d:load_crema_d",
        "CREMA-D: audio + video of 91 actors, 6 emotions",
    ),
    (
        "kinetics_sounds",
        "unipair.data.benchmarks.kinetics_sounds:load_kinetics_sounds",
        "Kinetics-Sounds, OGM-GE's 31-class lists: audio + video",
    ),
    (
        "ave",
        "unipair.data.benchmarks.ave:load_ave",
        "AVE: audio + video of the annotated event, 28 classes",
    ),
    (
        "food101",
        "unipair.data.benchmarks.mmbt:load_food101",
        "UPMC Food-101: image + recipe title, 101 dishes (MMBT jsonl or CSV; local data)",
    ),
    (
        "mvsa_single",
        "unipair.data.benchmarks.mmbt:load_mvsa_single",
        "MVSA-Single: image + tweet, 3 sentiments (MMBT jsonl; local data and tokenizer)",
    ),
    (
        "mosi",
        "unipair.data.benchmarks.mmsa:load_mosi",
        "CMU-MOSI: text, audio, vision sequences from MMSA pickles (local data)",
    ),
    (
        "mosei",
        "unipair.data.benchmarks.mmsa:load_mosei",
        "CMU-MOSEI: text, audio, vision sequences from MMSA pickles (local data)",
    ),
):
    DATASETS.register(_name)(DatasetEntry(_loader, _about))
DATASETS.register("avdigits")(
    DatasetEntry(
        "unipair.data.avdigits:load_avdigits",
        "FSDD spoken digits paired with MNIST images (audio + image; needs local data)",
    )
)


def is_npz_path(name: str) -> bool:
    """A path to a user's ``.npz`` (any case: ``MINE.NPZ`` too)."""
    return Path(name).suffix.lower() == ".npz"


def is_manifest_path(name: str) -> bool:
    """A path to a manifest (``.csv``, ``.jsonl``)."""
    return Path(name).suffix.lower() in (".csv", ".jsonl")


def is_prepared_path(name: str) -> bool:
    """A folder ``unipair prepare`` wrote."""
    return (Path(name) / "prepared.json").is_file()


def file_loader(name: str) -> str | None:
    """The loader of a dataset given as a path (``module:function``), None for a name."""
    if is_npz_path(name):
        return _NPZ_LOADER
    if is_manifest_path(name):
        return _MANIFEST_LOADER
    if is_prepared_path(name):
        return _PREPARED_LOADER
    return None


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_options(name: str) -> dict[str, Any]:
    """Options a dataset accepts, with their defaults (``inspect.Parameter.empty`` if required);
    for a prepared folder, those of the dataset it was prepared from."""
    loader = file_loader(name)
    if loader == _PREPARED_LOADER:
        import json

        return dataset_options(json.loads((Path(name) / "prepared.json").read_text())["source"])
    factory = _resolve(loader) if loader else DATASETS.get(name).factory
    params = list(inspect.signature(factory).parameters.values())
    return {p.name: p.default for p in params if p.name != "path"}


def create(name: str, **options: Any) -> MultimodalData:
    """Load a registered dataset by name, or a user's ``.npz``, manifest (``.csv``,
    ``.jsonl``) or prepared folder by path."""
    loader = file_loader(name)
    if loader == _PREPARED_LOADER:  # the source's own options are checked when it loads
        return _resolve(loader)(name, **options)
    if loader is not None:
        _check_options(name, options)
        return _resolve(loader)(name, **options)
    if name not in DATASETS:
        raise UnknownNameError(
            DATASETS.unknown_message(name) + " (or give a path to an .npz file or a manifest)"
        )
    _check_options(name, options)
    return DATASETS.get(name).factory(**options)


def _check_options(name: str, options: dict[str, Any]) -> None:
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"dataset {name!r} has no option(s) {unknown}; allowed: {sorted(allowed)}"
        )
