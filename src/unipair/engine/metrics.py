"""Evaluation metrics with torchmetrics' ``update``/``compute`` contract, correct under DDP.

Fused accuracy and macro-F1 and cross-entropy over all samples; each modality's accuracy over
the samples where that modality is present; a method's per-sample values (e.g. MLA's fusion
weights) averaged over the samples where they are finite.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from unipair.methods.base import Prediction

__all__ = ["MultimodalMetrics"]


class MultimodalMetrics(nn.Module):
    def __init__(self, num_classes: int, modalities: Sequence[str], sync: bool = True) -> None:
        """``sync=False`` for a split evaluated by one process alone (the test split)."""
        super().__init__()
        self.num_classes = num_classes
        self._kw = kw = {"sync_on_compute": sync}
        self.acc = MulticlassAccuracy(num_classes, average="micro", **kw)
        self.f1 = MulticlassF1Score(num_classes, average="macro", **kw)
        self.loss = MeanMetric(**kw)
        self.modality_acc = nn.ModuleDict(
            {m: MulticlassAccuracy(num_classes, average="micro", **kw) for m in modalities}
        )
        self.modality_count = nn.ModuleDict({m: SumMetric(**kw) for m in modalities})
        self.per_sample = nn.ModuleDict()

    @torch.no_grad()
    def update(self, pred: Prediction, labels: Tensor) -> None:
        logits = pred.logits.float()
        self.acc.update(logits, labels)
        self.f1.update(logits, labels)
        self.loss.update(F.cross_entropy(logits, labels, reduction="none"))
        for m, z in pred.modality_logits.items():
            rows = pred.present[m]
            if m not in self.modality_acc:
                continue
            self.modality_count[m].update(rows.sum())
            if bool(rows.any()):
                self.modality_acc[m].update(z[rows].float(), labels[rows])
        for key, value in pred.per_sample.items():
            safe = key.replace(".", "_")
            if safe not in self.per_sample:
                self.per_sample[safe] = MeanMetric(**self._kw).to(value.device)
            finite = value[torch.isfinite(value)]
            if finite.numel():
                self.per_sample[safe].update(finite.float())

    def compute(self) -> dict[str, float]:
        out = {
            "acc": float(self.acc.compute()),
            "f1": float(self.f1.compute()),
            "loss": float(self.loss.compute()),
        }
        for m, metric in self.modality_acc.items():
            # every process computes every metric (they synchronise); NaN if never present
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                acc, count = float(metric.compute()), float(self.modality_count[m].compute())
            out[f"acc/{m}"] = acc if count > 0 else float("nan")
        for key, metric in self.per_sample.items():
            out[key] = float(metric.compute())
        return out

    def reset(self) -> None:
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.reset()
