"""The data model: one sample, one batch, and how samples become a batch.

A modality that is missing is explicit: ``present`` is False and its tensor is zeros of the
right shape. Code downstream must read ``present``; a zero tensor alone never means "missing".
A sequence modality whose samples differ in length (token ids, [T, D] features) is padded to
the batch's longest sample and carries ``valid[m]``, bool [B, L]: which steps are real. Encoders
that read sequences honour it, so padding never changes an output.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from unipair.data.shared_buffers import shared_arena

__all__ = ["Affine", "MultimodalBatch", "Sample", "batch_tensors", "collate", "dequantize"]


#: per-channel (scale, shift) of a quantized modality
Affine = tuple[tuple[float, ...], tuple[float, ...]]


@dataclass
class Sample:
    """One example: a tensor per modality, which modalities are present, and its class."""

    inputs: dict[str, Tensor]
    present: dict[str, bool]
    label: int
    index: int = -1

    def __post_init__(self) -> None:
        if set(self.inputs) != set(self.present):
            raise ValueError(
                f"Sample inputs {sorted(self.inputs)} and present {sorted(self.present)} "
                "must name the same modalities"
            )


@dataclass
class MultimodalBatch:
    """Stacked samples: ``inputs[m]`` is [B, ...], ``present[m]`` is bool [B], ``labels`` [B]."""

    inputs: dict[str, Tensor]
    present: dict[str, Tensor]
    labels: Tensor
    index: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    #: modality -> True if no row misses it; computed once (on CPU, where batches are built)
    #: so models can skip masking without a device synchronisation per step
    complete: dict[str, bool] = field(default_factory=dict)
    #: variable-length modalities only: bool [B, L], True for real (not padding) steps
    valid: dict[str, Tensor] = field(default_factory=dict)
    #: uint8 modalities in their decoded, channels-last layout [B, ..., C], standing for the
    #: float32 [B, C, ...] ``x * scale + shift`` per channel: frames cross workers, pinned
    #: memory and the bus as the bytes they were decoded to, 4x fewer, and the device converts
    #: and transposes them (:meth:`dequantize`, which ``engine.predict.on_device`` calls)
    quantized: dict[str, Affine] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        if set(self.inputs) != set(self.present):
            raise ValueError(
                f"batch inputs {sorted(self.inputs)} and present {sorted(self.present)} differ"
            )
        for m, x in self.inputs.items():
            if x.shape[0] != n or self.present[m].shape != (n,):
                raise ValueError(
                    f"modality {m!r}: inputs {tuple(x.shape)} / present "
                    f"{tuple(self.present[m].shape)} do not match {n} labels"
                )
        for m, v in self.valid.items():
            x = self.inputs[m]
            if v.dtype != torch.bool or v.shape != tuple(x.shape[:2]):
                raise ValueError(
                    f"modality {m!r}: valid {tuple(v.shape)} {v.dtype} must be bool "
                    f"{tuple(x.shape[:2])} (rows, steps)"
                )
        for m, (scale, shift) in self.quantized.items():
            x = self.inputs.get(m)
            if (
                x is None
                or x.dtype != torch.uint8
                or x.dim() < 3
                or not (len(scale) == len(shift) == x.shape[-1])
            ):
                raise ValueError(
                    f"modality {m!r}: quantized inputs must be uint8 [B, ..., C] with C scales "
                    f"and shifts, got {None if x is None else (x.dtype, tuple(x.shape))} and "
                    f"{len(scale)}/{len(shift)}"
                )
        if self.index.numel() == 0:
            self.index = torch.arange(n)
        if set(self.complete) != set(self.present):
            self.complete = {m: bool(p.all()) for m, p in self.present.items()}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modalities(self) -> list[str]:
        return list(self.inputs)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MultimodalBatch:
        return MultimodalBatch(
            inputs={m: x.to(device, non_blocking=non_blocking) for m, x in self.inputs.items()},
            present={m: p.to(device, non_blocking=non_blocking) for m, p in self.present.items()},
            labels=self.labels.to(device, non_blocking=non_blocking),
            index=self.index.to(device, non_blocking=non_blocking),
            complete=self.complete,
            valid={m: v.to(device, non_blocking=non_blocking) for m, v in self.valid.items()},
            quantized=self.quantized,
        )

    def pin_memory(self) -> MultimodalBatch:
        return MultimodalBatch(
            inputs={m: x.pin_memory() for m, x in self.inputs.items()},
            present={m: p.pin_memory() for m, p in self.present.items()},
            labels=self.labels.pin_memory(),
            index=self.index.pin_memory(),
            complete=self.complete,
            valid={m: v.pin_memory() for m, v in self.valid.items()},
            quantized=self.quantized,
        )

    def masks(self) -> dict[str, Tensor | None]:
        """``present`` with None for complete modalities: what fusions take."""
        return {m: None if self.complete[m] else p for m, p in self.present.items()}

    def subset(self, rows: Tensor) -> MultimodalBatch:
        """The rows selected by an index or bool mask, as a new batch."""
        return MultimodalBatch(
            inputs={m: x[rows] for m, x in self.inputs.items()},
            present={m: p[rows] for m, p in self.present.items()},
            labels=self.labels[rows],
            index=self.index[rows],
            valid={m: v[rows] for m, v in self.valid.items()},
            quantized=self.quantized,
        )

    def only(self, modalities: Iterable[str]) -> MultimodalBatch:
        """The same rows restricted to some modalities (for unimodal encoders and methods)."""
        keep = list(modalities)
        return MultimodalBatch(
            inputs={m: self.inputs[m] for m in keep},
            present={m: self.present[m] for m in keep},
            labels=self.labels,
            index=self.index,
            complete={m: self.complete[m] for m in keep},
            valid={m: v for m, v in self.valid.items() if m in keep},
            quantized={m: a for m, a in self.quantized.items() if m in keep},
        )

    def with_missing(self, missing: Mapping[str, Tensor]) -> MultimodalBatch:
        """Mark ``missing[m]`` rows (bool [B]) of modality m absent: present False, input zeroed."""
        inputs, present = dict(self.inputs), dict(self.present)
        for m, rows in missing.items():
            if m not in inputs:
                raise KeyError(f"unknown modality {m!r}; batch has {self.modalities}")
            rows = rows.to(device=inputs[m].device, dtype=torch.bool)
            keep = ~rows
            present[m] = present[m] & keep
            inputs[m] = inputs[m] * keep.view(-1, *([1] * (inputs[m].dim() - 1))).to(
                inputs[m].dtype
            )
        return MultimodalBatch(
            inputs,
            present,
            self.labels,
            self.index,
            valid=dict(self.valid),
            quantized=self.quantized,
        )

    def dequantize(self) -> MultimodalBatch:
        """The batch with its ``quantized`` inputs as float32 where they are (absent rows
        zeros, as everywhere); itself when nothing is quantized."""
        if not self.quantized:
            return self
        inputs = dict(self.inputs)
        for m, (scale, shift) in self.quantized.items():
            x = dequantize(self.inputs[m], scale, shift, batched=True)
            if not self.complete[m]:
                x.mul_(self.present[m].view(-1, *([1] * (x.dim() - 1))).to(x.dtype))
            inputs[m] = x
        return MultimodalBatch(
            inputs, self.present, self.labels, self.index, self.complete, dict(self.valid)
        )


def dequantize(x: Tensor, scale: Sequence[float], shift: Sequence[float], batched: bool) -> Tensor:
    """uint8 channels-last ``x`` ([..., C]; [B, ..., C] when ``batched``) as float32 [C, ...]
    ([B, C, ...]) ``x * scale + shift`` per channel, kept channels-last in memory (torch's
    ``channels_last`` / ``channels_last_3d`` for images / clips): no transposing copy, and
    ResNet-18 reads every frame of a clip without one. The frame transforms and
    :meth:`MultimodalBatch.dequantize` share it, so a sample and its batch agree to the bit."""
    # per channel along rows of W * C values: the channel pattern tiled W times vectorises,
    # where broadcasting over an innermost dimension of C = 3 would not (3x slower on CPU)
    width = x.shape[-2] if x.dim() >= 2 else 1
    a = torch.tensor(scale, dtype=torch.float32, device=x.device).repeat(width)
    b = torch.tensor(shift, dtype=torch.float32, device=x.device).repeat(width)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    rows_in, rows_out = x.reshape(-1, a.numel()), out.view(-1, a.numel())
    # convert, then scale and shift in place (a mixed-dtype addcmul is 2x slower on CPU), on
    # a CPU in blocks of about 1 MB that stay in cache between the passes (-35% time)
    step = rows_in.shape[0] if x.device.type != "cpu" else max(1, _BLOCK // a.numel())
    for i in range(0, rows_in.shape[0], step):
        block = rows_out[i : i + step].copy_(rows_in[i : i + step])
        torch.addcmul(b, block, a, out=block)
    return out.movedim(-1, int(batched))


_BLOCK = 1 << 18  # floats converted per block on a CPU


def batch_tensors(shapes: Mapping[str, tuple[Sequence[int], torch.dtype]]) -> dict[str, Tensor]:
    """Uninitialised tensors for a batch that samples are written into, one row each.

    In a DataLoader worker they share one buffer in shared memory (torch's ``default_collate``
    allocates its batch there too): the batch reaches the main process without another copy,
    as one shared-memory file, and the worker reuses the buffer once the main process is done
    with it (:mod:`unipair.data.shared_buffers`).
    """
    if get_worker_info() is None:
        return {m: torch.empty(tuple(shape), dtype=dtype) for m, (shape, dtype) in shapes.items()}
    return shared_arena(shapes)


def collate(samples: Sequence[Sample]) -> MultimodalBatch:
    """Stack samples into a batch; every sample must carry the same modalities and shapes."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    names = list(samples[0].inputs)
    for s in samples[1:]:
        if list(s.inputs) != names:
            raise ValueError(f"sample {s.index} has modalities {list(s.inputs)}, expected {names}")
    inputs = {}
    for m in names:
        shapes = {tuple(s.inputs[m].shape) for s in samples}
        if len(shapes) != 1:
            raise ValueError(f"modality {m!r} has differing shapes in one batch: {sorted(shapes)}")
        inputs[m] = torch.stack([s.inputs[m] for s in samples])
    present = {m: torch.tensor([bool(s.present[m]) for s in samples]) for m in names}
    labels = torch.tensor([int(s.label) for s in samples], dtype=torch.long)
    index = torch.tensor([int(s.index) for s in samples], dtype=torch.long)
    return MultimodalBatch(inputs, present, labels, index)
