"""Public dataset API: ``unipair.datasets.create(name_or_npz, **options)``."""

from unipair.data.registry import create, dataset_options, list_datasets, register_dataset

__all__ = ["create", "dataset_options", "list_datasets", "register_dataset"]
