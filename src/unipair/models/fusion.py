"""Fusions: combine per-modality features [B, d] into one vector, respecting ``present``.

A missing modality contributes nothing: its features never enter a sum, a gate or a FiLM
condition; concatenation puts exact zeros in its slot (so the head's slice for it is silent).
``present[m]`` is a bool mask [B], or None when no row misses modality m (then nothing is
masked, which keeps the common complete-data case as cheap as plain concatenation).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from unipair.errors import ConfigError
from unipair.registry import Registry

__all__ = ["FUSIONS", "Fusion", "create_fusion"]


class Fusion(nn.Module):
    """``forward(features, present) -> [B, out_dim]`` over the modalities given at construction."""

    out_dim: int

    def __init__(self, modalities: Sequence[str], width: int) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.width = width


FUSIONS: Registry[Callable[..., Fusion]] = Registry("fusion")


Masks = Mapping[str, Tensor | None]


def _mask(x: Tensor, present: Tensor | None) -> Tensor:
    return x if present is None else x * present.to(x.dtype).unsqueeze(-1)


def _bool(present: Tensor | None, like: Tensor) -> Tensor:
    """The mask as a bool tensor [B] (all True for None)."""
    if present is None:
        return torch.ones(like.shape[0], dtype=torch.bool, device=like.device)
    return present


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """[h_1; ...; h_M] with zeros for missing modalities; the default late fusion."""

    def __init__(self, modalities: Sequence[str], width: int) -> None:
        super().__init__(modalities, width)
        self.out_dim = width * len(self.modalities)

    def forward(self, features: dict[str, Tensor], present: Masks) -> Tensor:
        return torch.cat([_mask(features[m], present[m]) for m in self.modalities], dim=-1)


@FUSIONS.register("sum")
class SumFusion(Fusion):
    """Sum of the present modalities' features."""

    def __init__(self, modalities: Sequence[str], width: int) -> None:
        super().__init__(modalities, width)
        self.out_dim = width

    def forward(self, features: dict[str, Tensor], present: Masks) -> Tensor:
        return torch.stack([_mask(features[m], present[m]) for m in self.modalities]).sum(0)


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    """Per-sample softmax gate over present modalities, scored from each modality's features."""

    def __init__(self, modalities: Sequence[str], width: int) -> None:
        super().__init__(modalities, width)
        self.score = nn.ModuleDict({m: nn.Linear(width, 1) for m in self.modalities})
        self.out_dim = width

    def forward(self, features: dict[str, Tensor], present: Masks) -> Tensor:
        scores = torch.cat([self.score[m](features[m]) for m in self.modalities], dim=-1)
        mask = torch.stack([_bool(present[m], features[m]) for m in self.modalities], dim=-1)
        scores = scores.float().masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # no modality present -> zeros
        stacked = torch.stack([features[m] for m in self.modalities], dim=-1)
        return (stacked * weights.to(stacked.dtype).unsqueeze(1)).sum(-1)


@FUSIONS.register("film")
class FiLMFusion(Fusion):
    """FiLM (Perez et al., 2018): the first modality is modulated by the others.

    out = (1 + gamma(c)) * h_target + beta(c), with c the mean of the other present modalities'
    features. Without a condition the target passes unchanged; without the target, c itself.
    """

    def __init__(self, modalities: Sequence[str], width: int, target: str | None = None) -> None:
        super().__init__(modalities, width)
        self.target = target or self.modalities[0]
        if self.target not in self.modalities:
            raise ConfigError(f"film target {self.target!r} is not one of {self.modalities}")
        self.film = nn.Linear(width, 2 * width)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.out_dim = width

    def forward(self, features: dict[str, Tensor], present: Masks) -> Tensor:
        others = [m for m in self.modalities if m != self.target]
        h = features[self.target]
        if not others:
            return _mask(h, present[self.target])
        count = torch.stack([_bool(present[m], h) for m in others]).sum(0).to(h.dtype)
        count = count.unsqueeze(-1)
        cond = torch.stack([_mask(features[m], present[m]) for m in others]).sum(0)
        cond = cond / count.clamp_min(1.0)
        gamma, beta = self.film(cond).chunk(2, dim=-1)
        has_cond = (count > 0).to(h.dtype)
        modulated = h * (1 + gamma * has_cond) + beta * has_cond
        tgt = _bool(present[self.target], h).to(h.dtype).unsqueeze(-1)
        return tgt * modulated + (1 - tgt) * cond


def create_fusion(name: str, modalities: Sequence[str], width: int, **options) -> Fusion:
    return FUSIONS.get(name)(modalities, width, **options)
