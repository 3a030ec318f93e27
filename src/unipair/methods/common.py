"""Helpers several methods share: the step-normalised cross-entropy, per-modality confidence
scores, and OGM-GE's gradient modulation (used by ``ogm_ge`` and by ``pgm`` with
``base: ogm_ge``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unipair.data.batch import MultimodalBatch
from unipair.methods.base import TrainStep

__all__ = [
    "confidence_scores",
    "cross_entropy",
    "modulate_gradients",
    "modulation_coefficients",
]


def cross_entropy(
    logits: Tensor,
    labels: Tensor,
    step: TrainStep,
    mask: Tensor | None = None,
    over: str | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy averaged over the optimizer step's rows (see :meth:`TrainStep.mean`):
    every row, or the rows where ``mask`` (named ``over``: a modality, or '*') is true."""
    per_sample = F.cross_entropy(
        logits.float(), labels, reduction="none", label_smoothing=label_smoothing
    )
    return step.mean(per_sample, mask, over)


def confidence_scores(
    logits: Mapping[str, Tensor], batch: MultimodalBatch, modalities: Sequence[str]
) -> Tensor:
    """s_m: sum over present samples of the softmax probability of the true class, [M]."""
    scores = []
    for m in modalities:
        prob = F.softmax(logits[m].detach().float(), dim=-1)
        p_true = prob.gather(1, batch.labels[:, None]).squeeze(1)
        scores.append((p_true * batch.present[m].float()).sum())
    return torch.stack(scores)


def modulation_coefficients(scores: Tensor, alpha: float, coefficient: str = "shifted") -> Tensor:
    """OGM-GE's k_m for confidence scores s_m [M]: 1 - tanh(alpha * (rho_m - 1)) where
    rho_m = s_m / mean_{n != m} s_n > 1 (``reference``: 1 - tanh(alpha * rho_m)); else 1."""
    m = scores.numel()
    others = (scores.sum() - scores) / max(m - 1, 1)
    rho = scores / others.clamp_min(1e-12)
    excess = rho - 1.0 if coefficient == "shifted" else rho
    return torch.where(
        rho > 1.0, 1.0 - torch.tanh(alpha * excess.clamp_min(0.0)), torch.ones_like(rho)
    )


@torch.no_grad()
def modulate_gradients(
    encoders: Mapping[str, nn.Module],
    coeffs: Tensor,
    step: TrainStep,
    *,
    noise: bool = True,
    noise_on: str = "all",
    params: str = "weights",
) -> None:
    """Scale each encoder's gradients by k_m and add GE noise N(0, std(grad)).

    ``noise_on``: ``all`` encoders (the reference code) or only ``modulated`` ones (k < 1);
    ``params``: ``weights`` (matrices and kernels) or ``all`` parameters. The noise comes from
    :meth:`TrainStep.generator`, so every DDP replica draws the same noise and a resumed run
    draws what the uninterrupted one would have.
    """
    gen: torch.Generator | None = None
    for m, k in zip(encoders, coeffs.tolist(), strict=True):
        add_noise = noise and (noise_on == "all" or k < 1.0)
        for p in encoders[m].parameters():
            if p.grad is None or (params == "weights" and p.dim() < 2):
                continue
            if add_noise and p.grad.numel() > 1:
                if gen is None:
                    gen = step.generator(device=p.grad.device)
                std = float(p.grad.float().std()) + 1e-8
                draw = torch.randn(
                    p.grad.shape, generator=gen, device=p.grad.device, dtype=p.grad.dtype
                )
                p.grad.mul_(k).add_(draw, alpha=std)
            elif not math.isclose(k, 1.0):
                p.grad.mul_(k)
