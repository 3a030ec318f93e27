"""``ogm_ge``: On-the-fly Gradient Modulation with Generalization Enhancement.

Peng, Wei, Deng, Wang, Hu: "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022. After the joint loss's backward pass, the encoder gradients of the modality that is
ahead are scaled down, and Gaussian noise with the gradient's own standard deviation is added
(GE) to restore the gradient noise SGD relies on for generalisation.

Generalisation to N modalities (the paper has two): the confidence score of modality m is
s_m = sum_i softmax(z_m(i))[y_i] over the batch, with z_m its slice of the fused head. Its
discrepancy ratio is rho_m = s_m / mean_{n != m} s_n, which for two modalities is exactly the
paper's rho. Every modality with rho_m > 1 is scaled by k_m = 1 - tanh(alpha * rho_m), the
reference code's coefficient with its alpha 0.8 (``coefficient: shifted`` uses rho_m - 1, which
is continuous at rho = 1; it was not better on validation, docs/methods/baselines.md); the
others keep k_m = 1. Under DDP the scores are averaged across processes first, so every
replica applies the same coefficients.

One documented departure from the public reference code: it modulates only 4-D conv kernels
because its encoders are ResNets; we modulate every weight matrix or kernel (``params:
weights``) or every parameter (``params: all``) of the encoder, so MLP encoders are modulated too.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from unipair.config_base import StrictModel
from unipair.data.batch import MultimodalBatch
from unipair.methods.base import MethodTags, TrainStep
from unipair.methods.common import confidence_scores, modulate_gradients, modulation_coefficients
from unipair.methods.joint import Joint, JointHparams
from unipair.methods.registry import register_method

__all__ = ["OGMGE", "OGMGEHparams", "OGMOptions"]


class OGMOptions(StrictModel):
    """OGM-GE's modulation options, shared by ``ogm_ge`` and ``pgm`` with ``base: ogm_ge``."""

    alpha: float = Field(0.8, ge=0.0, description="modulation strength (reference code: 0.8)")
    coefficient: Literal["reference", "shifted"] = Field(
        "reference", description="1 - tanh(alpha*rho) (reference code) or 1 - tanh(alpha*(rho-1))"
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

    def modulate(
        self,
        encoders: Any,
        per_modality_logits: dict[str, Tensor],
        batch: MultimodalBatch,
        modalities: list[str],
        step: TrainStep,
    ) -> dict[str, Tensor]:
        """Coefficients from the confidence scores (averaged over processes, so every replica
        applies the same), then the encoder gradients scaled and noised; logs k_m."""
        with torch.no_grad():
            scores = step.all_reduce_mean(confidence_scores(per_modality_logits, batch, modalities))
            coeffs = modulation_coefficients(scores, self.alpha, self.coefficient)
        modulate_gradients(
            encoders, coeffs, step, noise=self.noise, noise_on=self.noise_on, params=self.params
        )
        return {f"coeff/{m}": k.detach() for m, k in zip(modalities, coeffs, strict=True)}


class OGMGEHparams(OGMOptions, JointHparams):
    """Joint training's hyperparameters plus the modulation options."""


@register_method("ogm_ge")
class OGMGE(Joint):
    """Joint training whose encoder gradients are modulated after every backward pass."""

    description = "joint training with on-the-fly gradient modulation (Peng et al., 2022)"
    Hparams = OGMGEHparams
    hparams: OGMGEHparams
    tags = MethodTags(
        accumulation=False,
        accumulation_note="the modulation coefficients are per-batch statistics",
    )

    def after_backward(
        self, batch: MultimodalBatch, outputs: Any, step: TrainStep
    ) -> dict[str, Tensor]:
        if len(self.modalities) < 2 or not self.hparams.active(step.epoch):
            return {}
        features, _ = outputs
        with torch.no_grad():
            slices = self.model.modality_logits(
                {m: f.detach() for m, f in features.items()}, batch.masks()
            )
        return self.hparams.modulate(self.model.encoders, slices, batch, self.modalities, step)
