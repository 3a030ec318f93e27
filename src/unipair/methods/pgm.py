"""``pgm``: Partitioner-guided Modal learning (Hu et al., ACM MM 2025) on the built-in model.

The joint model's encoders, fusion and head are wrapped by :class:`unipair.pgm.PgMAdapter`:
partitioner, uni-modal and paired-modal learners and the uni-paired decoder sit between the
encoders and the task head, and the loss adds a uni head per modality, a paired head and a
reconstruction term. ``base: ogm_ge`` additionally applies OGM-GE's gradient modulation to the
encoders after the PgM backward pass. Per-modality predictions are the uni heads' logits, so
``acc/<modality>`` is each modality's uni-head accuracy.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.methods.base import (
    EpochData,
    Method,
    MethodHparams,
    MethodTags,
    ParamGroup,
    Prediction,
    TrainStep,
)
from unipair.methods.ogm_ge import OGMOptions
from unipair.methods.registry import register_method
from unipair.models.multimodal import ModelConfig, MultimodalModel, fusion_input_space
from unipair.models.pgm import PgMAdapter, PgMConfig, PgMOutputs, pool

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
    tags = MethodTags(dropout_keys=("dropout",))

    def __init__(self, task: TaskSpec, model: ModelConfig, hparams: PgMHparams) -> None:
        super().__init__(task, model, hparams)
        base = MultimodalModel(task, model)
        widths = {m: base.encoders[m].out_dim for m in self.modalities}
        self.pgm = PgMAdapter(
            base.encoders, widths, task.num_classes, hparams, fusion=base.fusion, head=base.head
        )

    def parameter_groups(self) -> list[ParamGroup]:
        return self.pgm.parameter_groups()

    def heldout_fraction(self) -> float:
        hp = self.hparams
        return hp.share_heldout if hp.share_from == "heldout" and hp.partition != "none" else 0.0

    def on_train_epoch_start(self, step: TrainStep, data: EpochData) -> None:
        """``share_from: heldout``: before every epoch but the first, measure on the held-out
        part how much of the task each modality's uni head gets right alone, relative to the
        fused prediction above chance, and move that modality's uni share there."""
        if self.heldout_fraction() == 0.0 or step.epoch == 0 or not self.pgm.uni_heads:
            return
        mods, c = self.modalities, self.task.num_classes
        dev = self.pgm.uni_heads[mods[0]].weight.device
        # per column: hits of each uni head, then of the fused head; then rows seen; then labels
        counts = torch.zeros(2 * (len(mods) + 1) + c, dtype=torch.float64, device=dev)
        hits, seen, labels = counts.split([len(mods) + 1, len(mods) + 1, c])
        for batch in data.heldout():
            out = self.pgm(batch.inputs, batch.present, batch.valid)
            y = batch.labels
            for i, m in enumerate(mods):
                rows = batch.present[m]
                hits[i] += (out.uni_logits[m][rows].argmax(-1) == y[rows]).sum()
                seen[i] += rows.sum()
            hits[-1] += (out.logits.argmax(-1) == y).sum()
            seen[-1] += len(y)
            labels += torch.bincount(y, minlength=c)
        hits, seen, labels = step.all_reduce_sum(counts).cpu().split([len(mods) + 1] * 2 + [c])
        acc = (hits / seen.clamp_min(1.0)).tolist()
        chance = float(labels.max() / labels.sum().clamp_min(1.0))
        above = max(acc[-1] - chance, 1e-6)
        for m, a in zip(mods, acc, strict=False):  # the last accuracy is the fused one
            self.pgm.partitioners[m].set_share(min(max((a - chance) / above, 0.1), 0.9))

    def forward(self, batch: MultimodalBatch) -> PgMOutputs:
        return self.pgm(batch.inputs, batch.present, batch.valid)

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        step.zero_grad()
        out: PgMOutputs = step.forward(batch)
        losses = self.pgm.losses(out, batch.labels, step.mean)
        step.backward(losses["loss"])
        logs = {k: v.detach() for k, v in losses.items()}
        logs.update(self.after_backward(batch, out, step))
        step.step()
        return logs

    def after_backward(
        self, batch: MultimodalBatch, outputs: Any, step: TrainStep
    ) -> dict[str, Tensor]:
        """``base: ogm_ge``: OGM-GE's modulation of the encoders, with confidence scores from
        each modality's uni head (``ogm.scores: uni``) or its slice of the task head."""
        o = self.hparams.ogm
        if self.hparams.base != "ogm_ge" or len(self.modalities) < 2 or not o.active(step.epoch):
            return {}
        per_mod = outputs.uni_logits if o.scores == "uni" and outputs.uni_logits else None
        if per_mod is None:
            per_mod = self.pgm.task_slices(outputs)
        return o.modulate(self.pgm.encoders, per_mod, batch, self.modalities, step)

    def accumulation_problem(self) -> str | None:
        hp = self.hparams
        if hp.base == "ogm_ge":
            return "base: ogm_ge modulates with per-batch confidence scores"
        if hp.partition == "soft" and hp.gate_conditional and hp.lambda_prior > 0:
            return "the conditional gate's prior is a per-batch statistic"
        return None

    def modality_features(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        """The encoders' outputs h_m (before the partitioner), pooled."""
        h = self.pgm.encode(batch.inputs, batch.present, batch.valid)
        return {m: pool(x) for m, x in h.items()}

    def shared_embeddings(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        """What the task head reads per modality (the decoder's reconstructions by default)."""
        out = self.pgm(batch.inputs, batch.present, batch.valid)
        return dict(out.task_features)

    @property
    def embedding_space(self) -> str:
        return "reconstructions, the " + fusion_input_space(self.model_config.fusion)

    def predict(self, batch: MultimodalBatch) -> Prediction:
        out = self.pgm(batch.inputs, batch.present, batch.valid)
        per_mod = out.uni_logits or self.pgm.task_slices(out)
        shares = {f"uni_share/{m}": s for m, s in self.pgm.uni_share(out).items()}
        arrays = {} if out.paired_logits is None else {"paired_logits": out.paired_logits}
        return Prediction(out.logits, per_mod, batch.present, shares, arrays)
