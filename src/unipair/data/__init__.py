"""Data layer: samples and batches, datasets and their registry, splits and standardisation.

The names below are imported on first use (PEP 562): methods and models import
``unipair.data.batch``, which runs this file, and must not pay for the dataset loaders (and
scikit-learn) that the registry reaches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unipair.data.batch import MultimodalBatch, Sample, collate
    from unipair.data.dataset import (
        ModalitySpec,
        MultimodalData,
        MultimodalDataset,
        TaskSpec,
        TensorMultimodalDataset,
    )
    from unipair.data.registry import create, dataset_options, list_datasets, register_dataset

__all__ = [
    "ModalitySpec",
    "MultimodalBatch",
    "MultimodalData",
    "MultimodalDataset",
    "Sample",
    "TaskSpec",
    "TensorMultimodalDataset",
    "collate",
    "create",
    "dataset_options",
    "list_datasets",
    "register_dataset",
]

#: public name -> the module that defines it
_LAZY = {
    "MultimodalBatch": "unipair.data.batch",
    "Sample": "unipair.data.batch",
    "collate": "unipair.data.batch",
    "ModalitySpec": "unipair.data.dataset",
    "MultimodalData": "unipair.data.dataset",
    "MultimodalDataset": "unipair.data.dataset",
    "TaskSpec": "unipair.data.dataset",
    "TensorMultimodalDataset": "unipair.data.dataset",
    "create": "unipair.data.registry",
    "dataset_options": "unipair.data.registry",
    "list_datasets": "unipair.data.registry",
    "register_dataset": "unipair.data.registry",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups no longer reach __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
