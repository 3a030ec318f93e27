"""Building a run's pieces from its config, and evaluating a method over a split.

Public so that evaluation code (``unipair.evaluate``, ``compare``'s analyses, reports) rebuilds
runs exactly as training built them, without reaching into the training loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader, Dataset, Sampler

from unipair import datasets
from unipair.data import shared_buffers
from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import MultimodalData, MultimodalDataset
from unipair.data.missing import missing_masks
from unipair.engine.config import RunConfig
from unipair.engine.metrics import MultimodalMetrics
from unipair.io import atomic_path
from unipair.methods import Method, Prediction
from unipair.methods import create as create_method

__all__ = [
    "build_method",
    "hide_train_modalities",
    "load_data",
    "make_loader",
    "on_device",
    "predict_split",
    "save_predictions",
]


def load_data(cfg: RunConfig, missing: bool = True) -> MultimodalData:
    """The dataset with any configured training-time missing modalities applied (``missing``;
    the trainer applies them later itself, see :func:`hide_train_modalities`)."""
    data = datasets.create(cfg.dataset.name, **cfg.dataset.options)
    if missing:
        hide_train_modalities(data, cfg)
    return data


def hide_train_modalities(data: MultimodalData, cfg: RunConfig) -> None:
    """``dataset.train_missing_rate``: hide modalities in training rows (seeded, in place)."""
    rate = cfg.dataset.train_missing_rate
    if rate and (not isinstance(rate, Mapping) or any(rate.values())):
        masks = missing_masks(len(data.train), data.spec.names, rate, seed=cfg.train.seed + 7919)
        data.train = data.train.with_missing(masks)
        data.info["train_missing_rate"] = rate


def build_method(cfg: RunConfig, data: MultimodalData) -> Method:
    return create_method(cfg.method.name, data.spec, cfg.model, cfg.method.hparams)


def make_loader(
    ds: MultimodalDataset,
    sampler: Sampler[list[int]],
    workers: int = 0,
    pin: bool = False,
    prefetch: int | None = None,
) -> DataLoader:
    """A loader whose dataset answers whole batches (``__getitems__``); with ``workers`` the
    batches are decoded in that many persistent processes, ``prefetch`` batches ahead each."""
    return DataLoader(
        _LoaderBatches(ds, workers),
        batch_sampler=sampler,
        collate_fn=_identity,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers > 0 else None,
    )


class _LoaderBatches(Dataset):
    """``ds`` answering the loader with ``loader_batch``: quantized frames until the device."""

    def __init__(self, ds: MultimodalDataset, workers: int) -> None:
        self.ds, self.channel = ds, shared_buffers.Channel(workers)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitems__(self, indices: Sequence[int]) -> Any:
        # in a worker, made on buffers it reuses and wrapped for the trip to the main process
        return self.channel.send(self.ds.loader_batch, indices)


def _identity(batch: MultimodalBatch) -> MultimodalBatch:
    return batch  # datasets return whole batches through __getitems__


def on_device(batch: MultimodalBatch, fabric: Fabric, non_blocking: bool = False):
    """Move a batch to the device and turn its quantized (uint8) inputs into floats there, in
    the precision's input dtype (``bf16-true`` etc.)."""
    return fabric.strategy.precision.convert_input(
        batch.to(fabric.device, non_blocking=non_blocking).dequantize()
    )


def predict_split(
    method: Method,
    loader: DataLoader,
    metrics: MultimodalMetrics,
    fabric: Fabric,
    collect: bool = False,
    transform: Callable[[MultimodalBatch], MultimodalBatch] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """Evaluate ``method`` on every batch of ``loader``; optionally keep per-sample outputs."""
    was_training = method.training
    method.eval()
    metrics.reset()
    kept: list[tuple[MultimodalBatch, Prediction]] = []
    with torch.no_grad(), fabric.autocast():
        for batch in loader:
            batch = on_device(batch, fabric)
            if transform is not None:
                batch = transform(batch)
            pred = method.predict(batch)
            metrics.update(pred, batch.labels)
            if collect:
                kept.append((batch.to("cpu"), _to_cpu(pred)))
    method.train(was_training)
    return metrics.compute(), (_stack(kept) if collect else None)


def _to_cpu(p: Prediction) -> Prediction:
    return Prediction(
        p.logits.float().cpu(),
        {m: z.float().cpu() for m, z in p.modality_logits.items()},
        {m: x.cpu() for m, x in p.present.items()},
        {k: v.float().cpu() for k, v in p.per_sample.items()},
        {k: v.float().cpu() for k, v in p.arrays.items()},
    )


def _stack(kept: list[tuple[MultimodalBatch, Prediction]]) -> dict[str, np.ndarray]:
    """``test_predictions.npz`` arrays: labels, index, logits, ``logits/<m>``,
    ``present/<m>`` and ``extra/<key>`` for the method's per-sample values and arrays."""
    out: dict[str, np.ndarray] = {
        "labels": torch.cat([b.labels for b, _ in kept]).numpy(),
        "index": torch.cat([b.index for b, _ in kept]).numpy(),
        "logits": torch.cat([p.logits for _, p in kept]).numpy(),
    }
    first = kept[0][1]
    for m in first.modality_logits:
        out[f"logits/{m}"] = torch.cat([p.modality_logits[m] for _, p in kept]).numpy()
    for m in first.present:
        out[f"present/{m}"] = torch.cat([p.present[m] for _, p in kept]).numpy()
    for k in first.per_sample:
        out[f"extra/{k}"] = torch.cat([p.per_sample[k] for _, p in kept]).numpy()
    for k in first.arrays:
        out[f"extra/{k}"] = torch.cat([p.arrays[k] for _, p in kept]).numpy()
    return out


def save_predictions(path: Path, arrays: Mapping[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
