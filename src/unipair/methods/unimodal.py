"""``unimodal``: one modality trained and evaluated alone, the reference for laziness gaps."""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.errors import ConfigError
from unipair.methods.base import Method, MethodHparams, Prediction, TrainStep
from unipair.methods.common import cross_entropy
from unipair.methods.registry import register_method
from unipair.models.multimodal import ModelConfig, MultimodalModel

__all__ = ["Unimodal", "UnimodalHparams"]


class UnimodalHparams(MethodHparams):
    modality: str | None = Field(
        None, description="the modality to train on (default: the dataset's first)"
    )


@register_method("unimodal")
class Unimodal(Method):
    """The same encoder and head as ``joint``, fed one modality.

    Samples where that modality is missing take no part in the loss; at test time the model
    has nothing to go on for them, and its prediction there is the head's bias alone.
    """

    description = "one modality alone (reference for the laziness gap)"
    Hparams = UnimodalHparams
    hparams: UnimodalHparams

    def __init__(self, task: TaskSpec, model: ModelConfig, hparams: UnimodalHparams) -> None:
        modality = hparams.modality or task.names[0]
        if modality not in task.names:
            raise ConfigError(
                f"method 'unimodal': modality {modality!r} is not in this dataset; "
                f"choose one of {task.names}"
            )
        super().__init__(task, model, hparams)
        self.modality = modality
        self.model = MultimodalModel(task, model, modalities=[modality])

    @property
    def modalities(self) -> list[str]:
        return [self.modality]

    def forward(self, batch: MultimodalBatch) -> Tensor:
        return self.model(batch.only([self.modality]))[1]

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        step.zero_grad()
        logits = step.forward(batch)
        m = self.modality
        loss = cross_entropy(logits, batch.labels, step, batch.present[m], over=m)
        step.backward(loss)
        step.step()
        return {"loss": loss.detach()}

    def modality_features(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        return self.model.encode(batch.only([self.modality]))

    def predict(self, batch: MultimodalBatch) -> Prediction:
        logits = self.forward(batch)
        m = self.modality
        return Prediction(logits, {m: logits}, {m: batch.present[m]})
