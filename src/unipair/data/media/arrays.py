"""Precomputed features on disk (``.npy``, ``.pt``) and the padding of variable-length samples.

Peers ship features as one file per sample: MLA's CLIP features and token ids (``.npy``), MMSA's
[T, D] sequences of varying T. ``read_array`` reads one such file with the checks a model cannot
make later (finite values, the expected dimensions, a plain tensor rather than a pickled object);
``pad_sequences`` turns a batch of [T_i, ...] samples into one tensor and a validity mask, which
is where padding happens for token ids and feature sequences alike.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["ARRAY_SUFFIXES", "pad_sequences", "read_array"]

ARRAY_SUFFIXES = (".npy", ".pt", ".pth")
_FINITE_BLOCK = 1 << 22  # elements per isfinite pass: a bounded temporary for large files


def read_array(
    path: str | Path,
    dtype: np.dtype | type = np.float32,
    expect_dims: Sequence[int | None] | None = None,
    mmap: bool = False,
) -> np.ndarray:
    """One array from a ``.npy`` or ``.pt``/``.pth`` file, as ``dtype``.

    ``.npy`` is read without pickle; ``.pt`` with ``torch.load(weights_only=True)`` and must hold
    a tensor or a dict with exactly one tensor. ``expect_dims`` is the expected shape with
    ``None`` for a free size: ``(None, 768)`` accepts [T, 768] for any T. Empty arrays, complex or
    non-numeric values, NaN or infinite values, floats read as integers and values beyond
    ``dtype``'s range are errors naming the file. ``mmap=True`` returns a ``.npy`` already of
    ``dtype`` as a read-only memory map (pages read on access) instead of a copy in memory.
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    if dtype.kind not in "fiu":
        raise ConfigError(f"read_array: dtype must be a float or integer type, got {dtype}")
    if not path.exists():
        raise DataNotFoundError(f"array file {path} does not exist")
    if not path.is_file():
        raise DataFormatError(f"array file {path} is not a file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _load_npy(path)
    elif suffix in (".pt", ".pth"):
        array = _load_pt(path)
    else:
        raise DataFormatError(f"array file {path}: unknown suffix; expected {list(ARRAY_SUFFIXES)}")
    _check_shape(path, array.shape, expect_dims)
    return _convert(path, array, dtype, copy=not (mmap and suffix == ".npy"))


def _load_npy(path: Path) -> np.ndarray:
    """A memory map of the file: a conversion then reads it once, into one copy."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, pickle.UnpicklingError) as e:
        raise DataFormatError(f"cannot read array file {path} as .npy: {e}") from e


def _load_pt(path: Path) -> np.ndarray:
    """The one tensor in a ``.pt`` file, without running any pickled code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DataFormatError(
            f"cannot read array file {path}: it holds objects other than tensors, numbers, "
            "lists and dicts (torch.load with weights_only=True refuses to unpickle them)"
        ) from e
    except (RuntimeError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataFormatError(f"cannot read array file {path} as a torch file: {first}") from e
    tensor = next(iter(obj.values())) if isinstance(obj, dict) and len(obj) == 1 else obj
    if not isinstance(tensor, Tensor):
        held = f"a dict with keys {list(obj)[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise DataFormatError(
            f"array file {path} holds {held}, not a tensor; expected a tensor or a dict with "
            "exactly one tensor"
        )
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
        tensor = tensor.float()
    return tensor.detach().numpy()


def _check_shape(
    path: Path, shape: tuple[int, ...], expect_dims: Sequence[int | None] | None
) -> None:
    """A wrong feature size fails here, naming the file, not as a matmul error in an encoder."""
    if expect_dims is not None:
        expected = tuple(expect_dims)
        if len(shape) != len(expected) or any(
            e is not None and e != s for s, e in zip(shape, expected, strict=False)
        ):
            shown = "(" + ", ".join("?" if e is None else str(e) for e in expected) + ")"
            raise DataFormatError(
                f"array file {path} has shape {tuple(shape)}; expected {shown} (? = any size)"
            )
    if 0 in shape:
        raise DataFormatError(f"array file {path} holds no values (shape {tuple(shape)})")


def _convert(path: Path, array: np.ndarray, dtype: np.dtype, copy: bool) -> np.ndarray:
    """``array`` as ``dtype``, refusing any value the conversion would corrupt."""
    kind = array.dtype.kind
    if kind not in "biuf":
        raise DataFormatError(
            f"array file {path} holds {array.dtype} values; expected real numbers"
        )
    if dtype.kind == "f":
        with np.errstate(over="ignore"):  # an overflow to inf is reported just below
            out = np.array(array, dtype=dtype, copy=copy or array.dtype != dtype)
        if not _all_finite(out):
            reason = (
                "NaN or infinite values"
                if kind == "f" and not _all_finite(array)
                else f"values beyond the range of {dtype}"
            )
            raise DataFormatError(f"array file {path} contains {reason}")
        return out
    if kind == "f":
        raise DataFormatError(f"array file {path} holds {array.dtype} values; expected integers")
    info = np.iinfo(dtype)
    if not np.can_cast(array.dtype, dtype) and (array.min() < info.min or array.max() > info.max):
        raise DataFormatError(f"array file {path} holds values beyond the range of {dtype}")
    return np.array(array, dtype=dtype, copy=copy or array.dtype != dtype)


def _all_finite(array: np.ndarray) -> bool:
    """``np.isfinite(array).all()`` in blocks, so a large memory map needs no full-size mask."""
    flat = array.ravel(order="K")
    return all(
        np.isfinite(flat[i : i + _FINITE_BLOCK]).all() for i in range(0, flat.size, _FINITE_BLOCK)
    )


def pad_sequences(
    seqs: Sequence[np.ndarray | Tensor], pad_value: float = 0
) -> tuple[Tensor, Tensor]:
    """Samples [L_i, ...] to one tensor [B, L_max, ...] and a mask bool [B, L_max] (True = real).

    Positions past a sample's length hold ``pad_value``; the trailing dimensions must agree.
    The dtype is the promotion of the samples' dtypes (int64 token ids stay int64). A sample
    of length 0 is allowed and has an all-False mask row.
    """
    if not seqs:
        raise ValueError("pad_sequences needs at least one sequence")
    tensors = [s if isinstance(s, Tensor) else torch.tensor(np.asarray(s)) for s in seqs]
    trailing = tuple(tensors[0].shape[1:])
    for i, t in enumerate(tensors):
        if t.dim() == 0 or tuple(t.shape[1:]) != trailing:
            expected = ", ".join(["L", *map(str, trailing)])
            raise DataFormatError(
                f"sequence {i} has shape {tuple(t.shape)}; expected ({expected}) as sequence 0 "
                "(samples of one batch share every dimension but the first)"
            )
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    lengths = torch.tensor([t.shape[0] for t in tensors])
    longest = int(lengths.max())
    out = torch.full(
        (len(tensors), longest, *trailing), pad_value, dtype=dtype, device=tensors[0].device
    )
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    mask = torch.arange(longest) < lengths[:, None]
    return out, mask.to(out.device)
