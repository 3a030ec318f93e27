"""``pgm``: Partitioner-guided Modal learning (Hu et al., ACM MM 2025) on the built-in model.

The joint model's encoders, fusion and head are wrapped by :class:`unipair.pgm.PgMAdapter`:
partitioner, uni-modal and paired-modal learners and the uni-paired decoder sit between the
encoders and the task head, and the loss adds a uni head per modality, a paired head and a
reconstruction term. ``base: ogm_ge`` additionally applies OGM-GE's gradient modulation to the
encoders after the PgM backward pass. Per-modality predictions are the uni heads' logits, so
``acc/<modality>`` is each modality's uni-head accuracy.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.methods.base import Method, MethodHparams, ParamGroup, Prediction, TrainStep
from unipair.methods.ogm_ge import (
    OGMOptions,
    confidence_scores,
    modulate_gradients,
    modulation_coefficients,
)
from unipair.methods.registry import register_method
from unipair.models.multimodal import ModelConfig, MultimodalModel
from unipair.models.pgm import PgMAdapter, PgMConfig, PgMOutputs

__all__ = ["PgM", "PgMHparams", "PgMOGMOptions"]


class PgMOGMOptions(OGMOptions):
    """OGM-GE's options (see ``ogm_ge``), used when ``base: ogm_ge``."""

    scores: Literal["uni", "task"] = Field(
        "uni",
        description="confidence scores from each modality's uni head (default: they see one "
        "modality only) or from its slice of the task head (OGM-GE's original)",
    )


class PgMHparams(PgMConfig, MethodHparams):
    """PgM's components (:class:`PgMConfig`) plus the base method it is put on."""

    base: Literal["joint", "ogm_ge"] = Field(
        "joint", description="joint: PgM losses only; ogm_ge: plus OGM-GE encoder modulation"
    )
    ogm: PgMOGMOptions = Field(
        default_factory=PgMOGMOptions, description="OGM-GE options for base: ogm_ge"
    )


@register_method("pgm")
class PgM(Method):
    """The joint model (same encoders, fusion, head) trained through a PgM adapter."""

    description = "partitioner-guided uni/paired modal learning (Hu et al., 2025)"
    Hparams = PgMHparams
    hparams: PgMHparams

    def __init__(self, task: TaskSpec, model: ModelConfig, hparams: PgMHparams) -> None:
        super().__init__(task, model, hparams)
        base = MultimodalModel(task, model)
        widths = {m: base.encoders[m].out_dim for m in self.modalities}
        self.pgm = PgMAdapter(
            base.encoders, widths, task.num_classes, hparams, fusion=base.fusion, head=base.head
        )

    def parameter_groups(self) -> list[ParamGroup]:
        return self.pgm.parameter_groups()

    def forward(self, batch: MultimodalBatch) -> PgMOutputs:
        return self.pgm(batch.inputs, batch.present)

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        step.zero_grad()
        out = step.forward(batch)
        losses = self.pgm.losses(out, batch.labels)
        step.backward(losses["loss"])
        logs = {k: v.detach() for k, v in losses.items()}
        if (
            self.hparams.base == "ogm_ge"
            and len(self.modalities) > 1
            and self.hparams.ogm.active(step.epoch)
        ):
            with torch.no_grad():
                coeffs = self._coefficients(out, batch, step)
            modulate_gradients(self.pgm.encoders, coeffs, self.hparams.ogm, step)
            for m, k in zip(self.modalities, coeffs, strict=True):
                logs[f"coeff/{m}"] = k.detach()
        step.step()
        return logs

    def predict(self, batch: MultimodalBatch) -> Prediction:
        out = self.pgm(batch.inputs, batch.present)
        per_mod = out.uni_logits or self.pgm.task_slices(out)
        extras: dict[str, Tensor] = {
            f"uni_share/{m}": s for m, s in self.pgm.uni_share(out).items()
        }
        if out.paired_logits is not None:
            extras["paired_logits"] = out.paired_logits  # 2-D: kept in predictions, not averaged
        return Prediction(out.logits, per_mod, batch.present, extras)

    # ---- OGM-GE on top of PgM -----------------------------------------------------------
    def _coefficients(self, out: PgMOutputs, batch: MultimodalBatch, step: TrainStep) -> Tensor:
        """k_m from per-modality confidence scores (uni heads, or task-head slices)."""
        o = self.hparams.ogm
        per_mod = out.uni_logits if o.scores == "uni" and out.uni_logits else None
        if per_mod is None:
            per_mod = self.pgm.task_slices(out)
        scores = step.all_reduce_mean(confidence_scores(per_mod, batch, self.modalities))
        return modulation_coefficients(scores, o.alpha, o.coefficient)
