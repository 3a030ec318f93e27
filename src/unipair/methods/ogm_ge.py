"""``ogm_ge``: On-the-fly Gradient Modulation with Generalization Enhancement.

Peng, Wei, Deng, Wang, Hu: "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022. After the joint loss's backward pass, the encoder gradients of the modality that is
ahead are scaled down, and Gaussian noise with the gradient's own standard deviation is added
(GE) to restore the gradient noise SGD relies on for generalisation.

Generalisation to N modalities (the paper has two): the confidence score of modality m is
s_m = sum_i softmax(z_m(i))[y_i] over the batch, with z_m its slice of the fused head. Its
discrepancy ratio is rho_m = s_m / mean_{n != m} s_n, which for two modalities is exactly the
paper's rho. Every modality with rho_m > 1 is scaled by k_m = 1 - tanh(alpha * (rho_m - 1));
the others keep k_m = 1. Under DDP the scores are averaged across processes first, so every
replica applies the same coefficients.

Two documented departures from the public reference code: (1) it uses tanh(alpha * rho), which
jumps from 1 to 1 - tanh(alpha) as rho crosses 1; we use rho - 1 by default so k is continuous
(``coefficient: reference`` restores theirs); (2) it modulates only 4-D conv kernels because its
encoders are ResNets; we modulate every weight matrix or kernel (``params: weights``) or every
parameter (``params: all``) of the encoder, so MLP encoders are modulated too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from unipair.config_base import StrictModel
from unipair.data.batch import MultimodalBatch
from unipair.methods.base import TrainStep
from unipair.methods.joint import Joint, JointHparams
from unipair.methods.registry import register_method

__all__ = [
    "OGMGE",
    "OGMGEHparams",
    "OGMOptions",
    "confidence_scores",
    "modulate_gradients",
    "modulation_coefficients",
]


class OGMOptions(StrictModel):
    """OGM-GE's modulation options, shared by ``ogm_ge`` and ``pgm`` with ``base: ogm_ge``."""

    alpha: float = Field(0.5, ge=0.0, description="modulation strength")
    coefficient: Literal["shifted", "reference"] = Field(
        "shifted", description="1 - tanh(alpha*(rho-1)) (shifted) or 1 - tanh(alpha*rho)"
    )
    noise: bool = Field(True, description="GE: add N(0, std(grad)) to modulated gradients")
    noise_on: Literal["all", "modulated"] = Field(
        "all", description="GE noise on every modality (reference code) or only scaled ones"
    )
    params: Literal["weights", "all"] = Field(
        "weights", description="modulate weight matrices/kernels only, or every parameter"
    )
    start_epoch: int = Field(0, ge=0, description="first epoch with modulation")
    end_epoch: int | None = Field(None, ge=0, description="last epoch with modulation (None: all)")

    def active(self, epoch: int) -> bool:
        return self.start_epoch <= epoch and (self.end_epoch is None or epoch <= self.end_epoch)


class OGMGEHparams(OGMOptions, JointHparams):
    """Joint training's hyperparameters plus the modulation options."""


def modulation_coefficients(scores: Tensor, alpha: float, coefficient: str = "shifted") -> Tensor:
    """k_m for confidence scores s_m [M]: 1 - tanh(alpha * (rho_m - 1)) where rho_m > 1."""
    m = scores.numel()
    others = (scores.sum() - scores) / max(m - 1, 1)
    rho = scores / others.clamp_min(1e-12)
    excess = rho - 1.0 if coefficient == "shifted" else rho
    return torch.where(
        rho > 1.0, 1.0 - torch.tanh(alpha * excess.clamp_min(0.0)), torch.ones_like(rho)
    )


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


@torch.no_grad()
def modulate_gradients(
    encoders: Mapping[str, nn.Module], coeffs: Tensor, opts: OGMOptions, step: TrainStep
) -> None:
    """Scale each encoder's gradients by k_m and add GE noise N(0, std(grad)).

    The noise comes from a generator seeded by (run seed, global step), so every DDP replica
    draws the same noise and a resumed run draws what the uninterrupted one would have.
    """
    gen: torch.Generator | None = None
    for m, k in zip(encoders, coeffs.tolist(), strict=True):
        add_noise = opts.noise and (opts.noise_on == "all" or k < 1.0)
        for p in encoders[m].parameters():
            if p.grad is None or (opts.params == "weights" and p.dim() < 2):
                continue
            if add_noise and p.grad.numel() > 1:
                if gen is None:
                    gen = torch.Generator(p.grad.device)
                    gen.manual_seed(step.seed * 1_000_003 + step.global_step)
                std = float(p.grad.float().std()) + 1e-8
                noise = torch.randn(
                    p.grad.shape, generator=gen, device=p.grad.device, dtype=p.grad.dtype
                )
                p.grad.mul_(k).add_(noise, alpha=std)
            elif not math.isclose(k, 1.0):
                p.grad.mul_(k)


@register_method("ogm_ge")
class OGMGE(Joint):
    """Joint training whose encoder gradients are modulated after every backward pass."""

    description = "joint training with on-the-fly gradient modulation (Peng et al., 2022)"
    Hparams = OGMGEHparams
    hparams: OGMGEHparams

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        step.zero_grad()
        features, logits = step.forward(batch)
        loss = self.loss(logits, batch.labels)
        step.backward(loss)
        logs = {"loss": loss.detach()}
        if len(self.modalities) > 1 and self.hparams.active(step.epoch):
            with torch.no_grad():
                slices = self.model.modality_logits(
                    {m: f.detach() for m, f in features.items()}, batch.masks()
                )
                scores = step.all_reduce_mean(confidence_scores(slices, batch, self.modalities))
                hp = self.hparams
                coeffs = modulation_coefficients(scores, hp.alpha, hp.coefficient)
            modulate_gradients(self.model.encoders, coeffs, hp, step)
            for m, k in zip(self.modalities, coeffs, strict=True):
                logs[f"coeff/{m}"] = k.detach()
        step.step()
        return logs
