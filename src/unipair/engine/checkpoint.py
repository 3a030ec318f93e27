"""Checkpoints: written atomically through Fabric, verified when read, and the RNG state that
makes resume exact.

Every checkpoint carries a SHA-256 of the method's weights (``checksum``): a file whose bytes
were flipped inside a weight still unpickles, and would evaluate to garbage without it. A
truncated, empty or foreign file is reported as damaged in one line, naming the file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import shutil
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from torch import Tensor

from unipair.errors import RunDirError
from unipair.io import write_error

__all__ = [
    "fabric_load",
    "get_rng_state",
    "read_checkpoint",
    "save_checkpoint",
    "set_rng_state",
    "snapshot_checkpoint",
    "state_checksum",
    "verify_checksum",
]

#: what torch raises for a file that is not a complete checkpoint
_DAMAGED = (
    RuntimeError,
    EOFError,
    OSError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    ValueError,
)


def state_checksum(state_dict: Mapping[str, Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    if not path.is_file():
        raise RunDirError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise RunDirError(f"{path} is empty: the checkpoint was never written completely")
    try:
        yield
    except PermissionError:
        raise RunDirError(f"{path}: permission denied") from None
    except _DAMAGED as e:
        kind = type(e).__name__
        raise RunDirError(
            f"{path} is damaged (truncated, or not a unipair checkpoint: {kind}); it cannot be read"
        ) from None


def verify_checksum(path: Path, state_dict: Mapping[str, Tensor], expected: Any) -> None:
    if expected != state_checksum(state_dict):
        raise RunDirError(
            f"{path} is damaged: its weights do not match the checksum written with them"
        )


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint loaded on the CPU (weights only), its weights verified."""
    with _reading(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "method" not in state:
        raise RunDirError(f"{path} is not a unipair checkpoint")
    verify_checksum(path, state["method"], state.get("checksum"))
    return state


def fabric_load(
    fabric: Fabric, path: Path, modules: dict[str, Any], weights: Callable[[], Mapping]
) -> dict[str, Any]:
    """``fabric.load`` into ``modules`` with the same damage report and checksum check;
    ``weights()`` gives the loaded method's state dict."""
    with _reading(path):
        rest = fabric.load(path, modules)
    verify_checksum(path, weights(), rest.get("checksum"))
    return rest


def save_checkpoint(fabric: Fabric, path: Path, state: dict[str, Any]) -> None:
    """``fabric.save`` to a temporary sibling, then one rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fabric.save(tmp, state)
    except BaseException as e:
        if fabric.is_global_zero:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise
    if fabric.is_global_zero:
        os.replace(tmp, path)
    fabric.barrier()


def snapshot_checkpoint(fabric: Fabric, src: Path, dst: Path) -> None:
    """Make ``dst`` a snapshot of the finished file ``src``: a hard link (no copy) where the
    file system allows, else a copy; published with one rename, so never half-written.

    ``src`` is later replaced by rename, never rewritten in place, so the link stays intact.
    """
    if fabric.is_global_zero:
        tmp = dst.with_name(f".{dst.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    fabric.barrier()


def get_rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, in types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
