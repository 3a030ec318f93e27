"""``joint``: late-fusion joint training, the baseline every imbalance paper compares against."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.methods.base import ANY, Method, MethodHparams, Prediction, TrainStep
from unipair.methods.common import cross_entropy
from unipair.methods.registry import register_method
from unipair.models.multimodal import ModelConfig, MultimodalModel, fusion_input_space

__all__ = ["Joint", "JointHparams"]


class JointHparams(MethodHparams):
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross-entropy smoothing")


@register_method("joint")
class Joint(Method):
    """One cross-entropy on the fused prediction; all parts trained together.

    Per-modality predictions are diagnostics only: each modality's slice of the fused head
    (see :meth:`MultimodalModel.modality_logits`), as OGM-GE reports them. They show how much
    each modality learned inside the joint model, which is where modality laziness appears.
    """

    description = "late-fusion joint training (baseline)"
    Hparams = JointHparams
    hparams: JointHparams

    def __init__(self, task: TaskSpec, model: ModelConfig, hparams: JointHparams) -> None:
        super().__init__(task, model, hparams)
        self.model = MultimodalModel(task, model)

    def forward(self, batch: MultimodalBatch) -> tuple[dict[str, Tensor], Tensor]:
        return self.model(batch)

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        """One forward, the fused cross-entropy over rows with any modality, one backward,
        :meth:`after_backward` (gradient edits of subclasses), one optimizer step."""
        step.zero_grad()
        outputs: tuple[dict[str, Tensor], Tensor] = step.forward(batch)
        any_present = self.any_present(batch)
        loss = cross_entropy(
            outputs[1], batch.labels, step, any_present, ANY, self.hparams.label_smoothing
        )
        step.backward(loss)
        logs = {"loss": loss.detach(), **self.after_backward(batch, outputs, step)}
        step.step()
        return logs

    @staticmethod
    def any_present(batch: MultimodalBatch) -> Any:
        """Rows with at least one modality (None when every row is complete)."""
        if all(batch.complete.values()):
            return None
        return torch.stack(list(batch.present.values())).any(0)

    def modality_features(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        return self.model.encode(batch)

    def shared_embeddings(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        """The fusion's input: every modality's encoder features."""
        return self.model.encode(batch)

    @property
    def embedding_space(self) -> str:
        return fusion_input_space(self.model_config.fusion)

    def predict(self, batch: MultimodalBatch) -> Prediction:
        features, logits = self.model(batch)
        return Prediction(
            logits, self.model.modality_logits(features, batch.present), batch.present
        )
