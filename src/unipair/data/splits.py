"""Deterministic, class-stratified train/val/test splits."""

from __future__ import annotations

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
    try:
        kept, held = train_test_split(
            indices, test_size=fraction, random_state=seed, stratify=labels[indices], shuffle=True
        )
    except ValueError as e:
        counts = np.bincount(labels[indices])
        raise DataFormatError(
            f"cannot carve a stratified {what} split of {fraction:.0%} from {len(indices)} samples "
            f"with class counts {counts.tolist()}: {e}"
        ) from None
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
