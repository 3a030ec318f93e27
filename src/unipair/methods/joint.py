"""``joint``: late-fusion joint training, the baseline every imbalance paper compares against."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.methods.base import Method, MethodHparams, Prediction, TrainStep
from unipair.methods.registry import register_method
from unipair.models.multimodal import ModelConfig, MultimodalModel

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

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        step.zero_grad()
        _, logits = step.forward(batch)
        loss = self.loss(logits, batch.labels)
        step.backward(loss)
        step.step()
        return {"loss": loss.detach()}

    def predict(self, batch: MultimodalBatch) -> Prediction:
        features, logits = self.model(batch)
        return Prediction(
            logits, self.model.modality_logits(features, batch.present), batch.present
        )
