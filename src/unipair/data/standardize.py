"""Per-modality standardisation, fitted on the training split only."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unipair.data.dataset import TensorMultimodalDataset
from unipair.errors import DataFormatError

__all__ = ["Standardizer"]


def _chunks(x: Tensor, present: Tensor, steps: Tensor | None = None, megabytes: int = 1):
    """The present rows of ``x`` (for a padded sequence, its real steps only, as [n, D]), in
    chunks of about ``megabytes`` once in float64."""
    rows = max(1, (megabytes << 20) // max(8 * x[0].numel(), 1))
    for start in range(0, x.shape[0], rows):
        part = x[start : start + rows]
        keep = present[start : start + rows]
        if steps is not None:
            yield part[steps[start : start + rows] & keep[:, None]][:, None]
            continue
        yield part if bool(keep.all()) else part[keep]


def _feature_axis(sample_rank: int) -> int:
    """Vectors [D] and sequences [L, D] normalise per feature; images and clips per channel."""
    return sample_rank - 1 if sample_rank <= 2 else 0


@dataclass
class Standardizer:
    """Mean and std per feature (or channel) of each modality, from present training rows."""

    mean: dict[str, Tensor]
    std: dict[str, Tensor]

    @classmethod
    def fit(cls, train: TensorMultimodalDataset, eps: float = 1e-6) -> Standardizer:
        """Statistics in float64, accumulated over chunks of rows (two passes: the mean, then
        the centred squares), so fitting never copies the training data."""
        mean, std = {}, {}
        for m, x in train.inputs.items():
            present = train.present[m]
            if not bool(present.any()):
                raise DataFormatError(f"modality {m!r} has no present training sample to fit on")
            axis = _feature_axis(x.dim() - 1) + 1
            steps = train.valid.get(m)
            total, count = None, 0
            for part in _chunks(x, present, steps):
                moved = part.double().movedim(axis, -1).reshape(-1, part.shape[axis])
                total = moved.sum(0) if total is None else total + moved.sum(0)
                count += moved.shape[0]
            mu = total / count
            squares = None
            for part in _chunks(x, present, steps):
                moved = (
                    part.to(torch.float64, copy=True)
                    .movedim(axis, -1)
                    .reshape(-1, part.shape[axis])
                )
                sq = moved.sub_(mu).pow_(2).sum(0)  # in place: one float64 chunk at a time
                squares = sq if squares is None else squares + sq
            mean[m] = mu.float()
            std[m] = (squares / count).sqrt().clamp_min(eps).float()
        return cls(mean, std)

    def _shape(self, m: str, x: Tensor) -> list[int]:
        shape = [1] * x.dim()
        shape[_feature_axis(x.dim() - 1) + 1] = -1
        return shape

    def transform_(self, data: TensorMultimodalDataset) -> None:
        """Standardise ``data``'s float32 inputs in place; missing rows stay exactly zero."""
        for m, x in data.inputs.items():
            shape = self._shape(m, x)
            x.sub_(self.mean[m].view(shape)).div_(self.std[m].view(shape))
            missing = ~data.present[m]
            if bool(missing.any()):
                x[missing] = 0.0
            if m in data.valid:  # padding steps stay exactly zero
                x[~data.valid[m]] = 0.0
