"""Evaluate a finished run again: any split, optionally with modalities marked missing.

Missing modalities are hidden through ``present`` (and their inputs zeroed), never by
zero-filling alone, so every method sees them as absent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric

from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import MultimodalData
from unipair.data.missing import missing_masks
from unipair.engine.checkpoint import read_checkpoint
from unipair.engine.config import load_config
from unipair.engine.metrics import MultimodalMetrics
from unipair.engine.precision import resolve_precision
from unipair.engine.predict import build_method, load_data, make_loader, on_device, predict_split
from unipair.engine.run_dir import RunDir
from unipair.engine.samplers import ShardBatchSampler
from unipair.errors import ConfigError, RunDirError, UnknownNameError
from unipair.methods import Method

__all__ = ["LoadedRun", "evaluate"]


class LoadedRun:
    """A finished run rebuilt in memory: its config, data, and method with the best weights."""

    def __init__(self, run_dir: str | Path, accelerator: str = "cpu") -> None:
        self.run = RunDir(run_dir)
        if not self.run.config.is_file():
            raise RunDirError(f"{self.run.path} is not a run directory (no config.yaml)")
        if not self.run.best.is_file():
            raise RunDirError(f"{self.run.best} does not exist: the run has not finished")
        self.config = load_config(self.run.config)
        self.config.fabric.accelerator = accelerator
        precision = resolve_precision(self.config.fabric.precision, accelerator)
        self.fabric = Fabric(accelerator=accelerator, devices=1, precision=precision)  # type: ignore[arg-type]
        self.data: MultimodalData = load_data(self.config)
        self._check_fingerprint()
        self.method: Method = build_method(self.config, self.data)
        self.method.load_state_dict(read_checkpoint(self.run.best)["method"])
        self.method.to(self.fabric.device).eval()

    def _check_fingerprint(self) -> None:
        if not self.run.summary.is_file():
            return
        expected = json.loads(self.run.summary.read_text()).get("dataset_fingerprint")
        if expected and expected != self.data.fingerprint:
            raise RunDirError(
                f"{self.run.path}: the dataset differs from the one the run was trained on "
                f"(fingerprint {self.data.fingerprint}, run recorded {expected})"
            )

    @torch.no_grad()
    def per_modality_rows(
        self,
        split: str,
        get: Callable[[Method, MultimodalBatch], Mapping[str, torch.Tensor] | None],
        batch_size: int = 512,
    ) -> dict[str, dict[str, np.ndarray]]:
        """modality -> {"x": [n, ...], "y": labels [n], "row": split rows [n]} of what ``get``
        returns (features, embeddings), over the rows where the modality is present; {} when
        ``get`` returns None (the method has no such quantity)."""
        ds = self.data.split(split).eval_view()
        loader = make_loader(ds, ShardBatchSampler(len(ds), batch_size))
        chunks: dict[str, list[tuple[np.ndarray, ...]]] = {}
        self.method.eval()
        start = 0
        with self.fabric.autocast():
            for batch in loader:
                batch = on_device(batch, self.fabric)
                out = get(self.method, batch)
                if out is None:
                    return {}
                index = np.arange(start, start + len(batch))
                start += len(batch)
                for m, x in out.items():
                    rows = batch.present[m]
                    x, y = x[rows].float().cpu().numpy(), batch.labels[rows].cpu().numpy()
                    chunks.setdefault(m, []).append((x, y, index[rows.cpu().numpy()]))
        return {
            m: {k: np.concatenate([c[i] for c in parts]) for i, k in enumerate(("x", "y", "row"))}
            for m, parts in chunks.items()
        }

    def evaluate(
        self,
        split: str = "test",
        missing_rate: float | Mapping[str, float] = 0.0,
        missing_modality: str | None = None,
        missing_seed: int = 0,
        batch_size: int | None = None,
    ) -> dict[str, float]:
        ds = self.data.split(split).eval_view()
        names = self.data.spec.names
        if missing_modality is not None:
            if missing_modality not in names:
                raise UnknownNameError(
                    f"unknown modality {missing_modality!r}; this run has {names}"
                )
            if isinstance(missing_rate, Mapping):
                raise ConfigError("give one missing rate together with --missing-modality")
            missing_rate = {missing_modality: float(missing_rate)}
        hides = missing_rate if isinstance(missing_rate, Mapping) else {"*": missing_rate}
        if any(r > 0 for r in hides.values()):
            ds = ds.with_missing(missing_masks(len(ds), names, missing_rate, missing_seed))
        bs = batch_size or self.config.train.eval_batch_size
        loader = make_loader(ds, ShardBatchSampler(len(ds), bs))
        metrics = MultimodalMetrics(self.data.spec.num_classes, self.method.modalities, sync=False)
        result, _ = predict_split(self.method, loader, metrics.to(self.fabric.device), self.fabric)
        return result


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    missing_rate: float | Mapping[str, float] = 0.0,
    missing_modality: str | None = None,
    missing_seed: int = 0,
    accelerator: str = "cpu",
) -> dict[str, Any]:
    """Metrics of a finished run's best checkpoint on ``split``.

    ``missing_rate`` hides each modality independently in that fraction of samples (at least
    one modality stays); with ``missing_modality`` only that modality is hidden.
    """
    return LoadedRun(run_dir, accelerator).evaluate(
        split, missing_rate, missing_modality, missing_seed
    )
