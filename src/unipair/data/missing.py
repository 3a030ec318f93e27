"""Seeded missing-modality masks: which (sample, modality) pairs to hide."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from unipair.errors import ConfigError

__all__ = ["missing_masks", "resolve_rates"]


def resolve_rates(rate: float | Mapping[str, float], modalities: Sequence[str]) -> dict[str, float]:
    """A single rate applies to every modality; a mapping names modalities explicitly."""
    if isinstance(rate, Mapping):
        unknown = sorted(set(rate) - set(modalities))
        if unknown:
            raise ConfigError(f"missing rate names unknown modalities {unknown}; have {modalities}")
        rates = {m: float(rate.get(m, 0.0)) for m in modalities}
    else:
        rates = {m: float(rate) for m in modalities}
    for m, r in rates.items():
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"missing rate for {m!r} must be within [0, 1], got {r}")
    return rates


def missing_masks(
    n: int,
    modalities: Sequence[str],
    rate: float | Mapping[str, float],
    seed: int,
    keep_one: bool = True,
) -> dict[str, Tensor]:
    """Bool [n] per modality, True where hidden; each modality hidden independently at its rate.

    With ``keep_one`` a sample that would lose every modality keeps one, chosen at random, so
    every sample stays usable. Masks for a modality at rate r are nested: the rows hidden at a
    lower rate are a subset of those hidden at a higher one (same seed), which keeps missing-rate
    curves smooth.
    """
    rates = resolve_rates(rate, modalities)
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(len(modalities), n, generator=g)
    hidden = torch.stack([u[i] < rates[m] for i, m in enumerate(modalities)])
    if keep_one and len(modalities) > 1:
        none_left = hidden.all(0)
        if none_left.any():
            keep = torch.randint(len(modalities), (n,), generator=g)
            hidden[keep[none_left], torch.nonzero(none_left).squeeze(1)] = False
    elif keep_one:
        hidden[:] = False
    return {m: hidden[i] for i, m in enumerate(modalities)}
