"""Checkpoints written atomically through Fabric, and the RNG state that makes resume exact."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric

__all__ = ["get_rng_state", "save_checkpoint", "set_rng_state", "snapshot_checkpoint"]


def save_checkpoint(fabric: Fabric, path: Path, state: dict[str, Any]) -> None:
    """``fabric.save`` to a temporary sibling, then one rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fabric.save(tmp, state)
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
