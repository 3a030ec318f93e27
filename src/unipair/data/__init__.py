"""Data layer: samples and batches, datasets and their registry, splits and standardisation."""

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
