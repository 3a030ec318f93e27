"""Deterministic, class-stratified train/val/test splits."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split

from unipair.errors import ConfigError, DataFormatError

__all__ = ["stratified_holdout", "stratified_split"]


def stratified_holdout(
    labels: np.ndarray, indices: np.ndarray, fraction: float, seed: int, what: str = "holdout"
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into (kept, held out) with ``fraction`` held out in every class."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{what} fraction must be in (0, 1), got {fraction}")
    counts = np.bincount(labels[indices])
    counts = counts[counts > 0]
    n, classes = len(indices), len(counts)
    held_rows = math.ceil(fraction * n)
    if counts.min() < 2 or held_rows < classes or n - held_rows < classes:
        raise DataFormatError(
            f"cannot carve a class-stratified {what} part of {fraction:.0%} from {n} samples "
            f"({held_rows} rows) with {classes} classes: every class needs at least 2 samples "
            f"(the smallest has {counts.min()}) and each side at least one row per class; "
            f"use more data or a larger {what} fraction, or give the split yourself (a 'split' "
            "array in an .npz)"
        )
    kept, held = train_test_split(
        indices, test_size=fraction, random_state=seed, stratify=labels[indices], shuffle=True
    )
    return np.sort(kept), np.sort(held)


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Indices of train/val/test; fractions are of the whole dataset."""
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )
    everything = np.arange(len(labels))
    rest, test = stratified_holdout(labels, everything, test_fraction, seed, "test")
    train, val = stratified_holdout(
        labels, rest, val_fraction / (1.0 - test_fraction), seed + 1, "val"
    )
    return {"train": train, "val": val, "test": test}
