"""Bring your own data: one ``.npz`` file, one array per modality.

Layout: each modality is an array [N, ...] named after the modality; ``label`` is [N] integers
0..C-1; ``split`` (optional) is [N] strings train/val/test. Everything is validated up front so a
mistake is reported by array name, not as a shape error deep inside a model.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np

from unipair.data.assemble import assemble
from unipair.data.dataset import SPLITS, MultimodalData
from unipair.errors import DataFormatError, DataNotFoundError

__all__ = ["NpzFormatError", "load_npz"]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class NpzFormatError(DataFormatError):
    """The file does not follow the documented npz layout; the message says where."""


def load_npz(
    path: str | Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    standardize: bool = True,
) -> MultimodalData:
    path = Path(path)
    arrays, labels, split = _read_and_validate(path)
    digest = _file_digest(path)
    split_idx = None
    if split is not None:
        split_idx = {s: np.flatnonzero(split == s) for s in SPLITS if np.any(split == s)}
        if "train" not in split_idx or "test" not in split_idx:
            raise NpzFormatError(f"{path}: array 'split' must contain 'train' and 'test' rows")
    num_classes = int(labels.max()) + 1
    train_rows = split_idx["train"] if split_idx is not None else np.arange(len(labels))
    absent = sorted(set(range(num_classes)) - set(labels[train_rows].tolist()))
    if absent:
        raise NpzFormatError(
            f"{path}: array 'label' has class(es) {absent} with no training sample"
        )
    return assemble(
        path.stem,
        arrays,
        labels,
        seed=seed,
        split=split_idx,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        standardize=standardize,
        num_classes=num_classes,
        source=f"npz:{digest}",
        info={"source": str(path)},
    )


def _file_digest(path: Path) -> str:
    """SHA-256 of the file, streamed: hashing never holds the file in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def _check_archive(path: Path) -> None:
    """A clear error for what is not an .npz archive."""
    if path.is_dir():
        raise NpzFormatError(f"{path} is a directory; expected an .npz file")
    if not path.is_file():
        raise DataNotFoundError(
            f"{path}: no such file; expected an .npz with one array per modality and 'label'"
        )
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise NpzFormatError(
            f"{path} is a single .npy array, not an .npz archive; save the modalities and "
            "'label' together with np.savez"
        )
    if not magic.startswith(b"PK"):
        kind = "empty" if not magic else "not a zip archive (a text file?)"
        raise NpzFormatError(f"{path} is {kind}; expected an .npz written by np.savez")


def _read_and_validate(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """Labels, split and every modality as float32, each array validated as it is read, so
    memory holds at most the arrays kept plus one being converted."""
    _check_archive(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if "label" not in names:
                raise NpzFormatError(f"{path}: array 'label' is missing; arrays are {names}")
            labels = _check_labels(path, z["label"])
            split = _check_split(path, z["split"], len(labels)) if "split" in names else None
            modalities = [k for k in names if k not in ("label", "split")]
            if len(modalities) < 2:
                raise NpzFormatError(
                    f"{path}: need at least two modality arrays besides 'label'/'split', "
                    f"found {modalities}"
                )
            arrays = {m: _check_modality(path, m, z[m], len(labels)) for m in modalities}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        if isinstance(e, NpzFormatError):
            raise
        raise NpzFormatError(f"{path}: not a readable .npz file ({e})") from None
    return arrays, labels, split


def _check_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 1 or len(labels) == 0:
        raise NpzFormatError(f"{path}: array 'label' must be 1-D and non-empty, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise NpzFormatError(f"{path}: array 'label' must hold integers, got {labels.dtype}")
    n = len(labels)
    if labels.min() < 0:
        raise NpzFormatError(f"{path}: array 'label' has negative values; expected integers 0..C-1")
    if labels.max() >= n:  # before building range(C): one label of 1e9 must not exhaust memory
        raise NpzFormatError(
            f"{path}: array 'label' has the value {labels.max()}, but with {n} samples the "
            f"classes must be 0..C-1 with C <= {n}"
        )
    present_classes = np.unique(labels)
    c = int(labels.max()) + 1
    if len(present_classes) < 2:
        raise NpzFormatError(f"{path}: array 'label' must contain at least two classes")
    gaps = sorted(set(range(c)) - set(present_classes.tolist()))
    if gaps:
        raise NpzFormatError(
            f"{path}: array 'label' values must be 0..C-1 with every class used; "
            f"class(es) {gaps} never occur"
        )
    return labels.astype(np.int64)


def _check_modality(path: Path, name: str, x: np.ndarray, n: int) -> np.ndarray:
    """The array validated and as float32 (converted in row chunks: no second full copy)."""
    if "." in name or "/" in name:
        raise NpzFormatError(
            f"{path}: array {name!r}: modality names cannot contain '.' or '/' (they are "
            "config keys and metric names); rename the array"
        )
    if x.ndim == 1 and x.shape[0] == n:  # one number per sample: a single feature
        x = x[:, None]
    if x.ndim < 1 or x.shape[0] != n:
        raise NpzFormatError(
            f"{path}: array {name!r} has shape {x.shape}, expected [N={n}, ...] like 'label'"
        )
    if x.size == 0:
        raise NpzFormatError(f"{path}: array {name!r} is empty (shape {x.shape})")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise NpzFormatError(
            f"{path}: array {name!r} is complex ({x.dtype}); store real features (e.g. "
            "the magnitude, or real and imaginary parts as channels)"
        )
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise NpzFormatError(f"{path}: array {name!r} must be numeric, got {x.dtype}")
    rows = max(1, (16 << 20) // max(x[0].nbytes, 1))  # about 16 MB of rows at a time
    bad, largest = 0, 0.0
    if np.issubdtype(x.dtype, np.floating):
        for start in range(0, n, rows):
            part = x[start : start + rows]
            bad += int(np.count_nonzero(~np.isfinite(part).reshape(len(part), -1).all(1)))
            if not bad:
                largest = max(largest, float(np.abs(part).max()))
    if bad:
        raise NpzFormatError(f"{path}: array {name!r} has NaN or inf values in {bad} rows")
    if largest > _FLOAT32_MAX:
        raise NpzFormatError(
            f"{path}: array {name!r} has values up to {largest:.3g}, beyond float32 (the "
            f"training dtype, max {_FLOAT32_MAX:.3g}); rescale it"
        )
    if x.dtype == np.float32:
        return x
    out = np.empty(x.shape, np.float32)
    for start in range(0, n, rows):
        out[start : start + rows] = x[start : start + rows]
    return out


def _check_split(path: Path, split: np.ndarray, n: int) -> np.ndarray:
    if split.shape != (n,):
        raise NpzFormatError(f"{path}: array 'split' has shape {split.shape}, expected ({n},)")
    split = split.astype(str)
    unknown = sorted(set(np.unique(split).tolist()) - set(SPLITS))
    if unknown:
        raise NpzFormatError(
            f"{path}: array 'split' has unknown value(s) {unknown}; allowed: {list(SPLITS)}"
        )
    return split
