"""Per-modality standardisation, fitted on the training split only."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from unipair.data.dataset import TensorMultimodalDataset
from unipair.errors import DataFormatError

__all__ = ["Standardizer"]


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
        mean, std = {}, {}
        for m, x in train.inputs.items():
            rows = x[train.present[m]].double()
            if rows.shape[0] == 0:
                raise DataFormatError(f"modality {m!r} has no present training sample to fit on")
            axis = _feature_axis(x.dim() - 1) + 1
            moved = rows.movedim(axis, -1).reshape(-1, rows.shape[axis])
            mean[m] = moved.mean(0).float()
            std[m] = moved.std(0, unbiased=False).clamp_min(eps).float()
        return cls(mean, std)

    def _shape(self, m: str, x: Tensor) -> list[int]:
        shape = [1] * x.dim()
        shape[_feature_axis(x.dim() - 1) + 1] = -1
        return shape

    def transform(self, data: TensorMultimodalDataset) -> TensorMultimodalDataset:
        def apply(m: str, x: Tensor) -> Tensor:
            shape = self._shape(m, x)
            z = (x.float() - self.mean[m].view(shape)) / self.std[m].view(shape)
            keep = data.present[m].view(-1, *([1] * (x.dim() - 1)))
            return torch.where(keep, z, torch.zeros_like(z))  # missing rows stay exactly zero

        return data.map_inputs(apply)
