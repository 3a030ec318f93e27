"""How a batch travels from a DataLoader worker to the main process, cheaply.

Two costs dominate a fast source such as a prepared cache, both measured here (one thread,
two shared cores): every tensor a worker returns crosses as its own shared-memory file whose
descriptor the main process fetches over a socket (0.5 to 0.9 ms per tensor, whatever its
size), and a fresh shared buffer costs a page fault for every 4 KiB first written (about 0.5
ms per MB, as long as reading the sample from the cache takes). So here:

- a batch's fixed-shape inputs share one buffer (:func:`shared_arena`): one descriptor a batch;
- tensors under :data:`BY_VALUE_BYTES` (labels, masks, indices) travel pickled, by value;
- each worker keeps its buffers and writes a later batch into one the main process is done
  with: the main process clears the buffer's flag (in a small array the loader shares with its
  workers, :class:`Channel`) when the last tensor viewing it there is freed, so a batch it
  keeps is never overwritten.

In a worker, :meth:`Channel.send` wraps the finished batch; unpickled in the main process the
wrapper is the plain batch again. Outside workers nothing here runs.
"""

from __future__ import annotations

import itertools
import math
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import get_worker_info

__all__ = ["BY_VALUE_BYTES", "CAPACITY", "Channel", "shared_arena"]

#: buffers a worker keeps (about its batches in flight); when all are held, a batch gets a
#: fresh buffer, as with torch's collate
CAPACITY = 8
#: tensors up to this size are pickled with the batch instead of crossing in shared memory
BY_VALUE_BYTES = 1 << 16
_ALIGN = 64  # bytes; each tensor of an arena starts on a cache line

_keys = itertools.count()
#: main process: the flags of each open channel, by key (kept alive by the channel)
_open: weakref.WeakValueDictionary[int, Tensor] = weakref.WeakValueDictionary()


class Channel:
    """Made by a loader in the main process before its workers start, and passed to each of
    them with the dataset: the flags through which the main process frees a worker's buffers."""

    def __init__(self, workers: int) -> None:
        self.flags = torch.zeros((max(workers, 1), CAPACITY), dtype=torch.uint8).share_memory_()
        self.key = next(_keys)
        _open[self.key] = self.flags

    def send(self, make: Callable[..., Any], *args: Any) -> Any:
        """``make(*args)``, a batch (an object whose ``__dict__`` holds its tensors or dicts
        of them); in a worker it is made on this channel's buffers and wrapped for the trip."""
        info = get_worker_info()
        if info is None:
            return make(*args)
        pool = _worker_pool()
        if pool.channel is None:
            pool.channel = (self.key, info.id, self.flags[info.id].numpy())
        return _Shipped(make(*args), pool)


class _Pool:
    """One worker's buffers; a set flag means the worker or the main process holds it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.channel: tuple[int, int, np.ndarray] | None = None  # key, worker id, flags
        self.buffers: list[torch.UntypedStorage] = []

    def take(self, nbytes: int) -> torch.UntypedStorage:
        held = self.channel[2] if self.channel is not None else np.ones(0, np.uint8)
        for slot, storage in enumerate(self.buffers):
            if not held[slot] and storage.nbytes() == nbytes:
                held[slot] = 1
                return storage
        storage = torch.UntypedStorage._new_shared(nbytes)
        if len(self.buffers) < held.size:
            held[len(self.buffers)] = 1
            self.buffers.append(storage)
        return storage

    def slot(self, storage: torch.UntypedStorage) -> int | None:
        ptr = storage.data_ptr()
        return next((i for i, s in enumerate(self.buffers) if s.data_ptr() == ptr), None)


_pool: _Pool | None = None


def _worker_pool() -> _Pool:
    global _pool
    if _pool is None or _pool.pid != os.getpid():  # a fork inherits no buffers
        _pool = _Pool()
    return _pool


def shared_arena(shapes: Mapping[str, tuple[Sequence[int], torch.dtype]]) -> dict[str, Tensor]:
    """Uninitialised tensors of these shapes and dtypes, all on one shared-memory buffer that
    this worker reuses once the main process is done with it (outside a loader's worker, a
    fresh shared buffer)."""
    offsets, end = {}, 0
    for name, (shape, dtype) in shapes.items():
        end = -(-end // _ALIGN) * _ALIGN
        offsets[name] = end
        end += math.prod(shape) * dtype.itemsize
    storage = _worker_pool().take(max(end, 1))
    return {
        name: torch.empty((0,), dtype=dtype).set_(
            storage, offsets[name] // dtype.itemsize, tuple(shape)
        )
        for name, (shape, dtype) in shapes.items()
    }


class _Shipped:
    """A batch on its way from a worker; unpickled, it is the batch again (:func:`_receive`)."""

    def __init__(self, batch: Any, pool: _Pool) -> None:
        self.batch, self.pool = batch, pool

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        arena: list[torch.UntypedStorage] = []  # at most one pooled buffer per batch
        state = _pack(dict(self.batch.__dict__), self.pool, arena)
        key, worker, _ = self.pool.channel  # type: ignore[misc]
        slot = self.pool.slot(arena[0]) if arena else None
        whole = torch.empty((0,), dtype=torch.uint8).set_(arena[0]) if arena else None
        return _receive, (type(self.batch), state, whole, key, worker, slot)


class _ByValue:
    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class _InArena:
    __slots__ = ("dtype", "offset", "shape", "stride")

    def __init__(self, x: Tensor) -> None:
        self.dtype, self.offset = x.dtype, x.storage_offset()
        self.shape, self.stride = tuple(x.shape), x.stride()


def _pack(value: Any, pool: _Pool, arena: list[torch.UntypedStorage]) -> Any:
    if isinstance(value, dict):
        return {k: _pack(v, pool, arena) for k, v in value.items()}
    if not isinstance(value, Tensor) or value.device.type != "cpu":
        return value
    storage = value.untyped_storage()
    if not arena and pool.slot(storage) is not None:
        arena.append(storage)  # the batch's pooled buffer (one a batch: shared_arena)
    if arena and storage.data_ptr() == arena[0].data_ptr():
        return _InArena(value)
    if value.nbytes <= BY_VALUE_BYTES and value.dtype != torch.bfloat16:
        return _ByValue(value.numpy())
    return value


def _unpack(value: Any, arena: Tensor | None) -> Any:
    if isinstance(value, dict):
        return {k: _unpack(v, arena) for k, v in value.items()}
    if isinstance(value, _ByValue):
        return torch.from_numpy(value.array)
    if isinstance(value, _InArena):
        return torch.empty((0,), dtype=value.dtype).set_(
            arena.untyped_storage(), value.offset, value.shape, value.stride
        )
    return value


def _receive(
    cls: type, state: dict, arena: Tensor | None, key: int, worker: int, slot: int | None
) -> Any:
    """In the main process: the batch again; its buffer is freed for its worker once the
    last tensor viewing it here is freed."""
    batch = cls.__new__(cls)
    batch.__dict__.update(_unpack(state, arena))
    flags = _open.get(key)
    if arena is not None and slot is not None and flags is not None:
        weakref.finalize(arena.untyped_storage(), _release, flags[worker].numpy(), slot)
    return batch


def _release(held: np.ndarray, slot: int) -> None:
    held[slot] = 0
