"""A method that needs a data pass every epoch, written in this one file against the public
contract (no engine change): class prototypes from the probe loader, as PMR computes them, and
a prototype accuracy measured on a held-out part carved from train.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

import unipair
from unipair.data.batch import MultimodalBatch
from unipair.methods import EpochData, MethodHparams, Prediction, TrainStep, register_method
from unipair.methods.base import ANY, Method
from unipair.methods.common import cross_entropy
from unipair.models.multimodal import MultimodalModel
from unipair.testing import _engine_config, parametrize_with_checks


class PrototypeHparams(MethodHparams):
    weight: float = Field(0.5, ge=0.0, description="weight of the prototype cross-entropy")
    heldout: float = Field(0.1, gt=0.0, lt=1.0, description="held-out fraction of train")


@register_method("toy_prototypes")
class ToyPrototypes(Method):
    """Joint training plus, per modality, a cross-entropy on -distance to class prototypes
    that are recomputed from all training rows at the start of every epoch."""

    description = "test-only: class prototypes from a data pass per epoch"
    Hparams = PrototypeHparams
    hparams: PrototypeHparams

    def __init__(self, task, model, hparams) -> None:
        super().__init__(task, model, hparams)
        self.model = MultimodalModel(task, model)
        c, w = task.num_classes, model.width
        self.register_buffer("prototypes", torch.zeros(len(task.names), c, w))
        self.register_buffer("heldout_acc", torch.zeros(()))
        self.seen_index: list[Tensor] = []  # rows the optimizer saw (for the tests)
        self.heldout_index: list[Tensor] = []

    def heldout_fraction(self) -> float:
        return self.hparams.heldout

    def forward(self, batch: MultimodalBatch):
        return self.model(batch)

    def on_train_epoch_start(self, step: TrainStep, data: EpochData) -> None:
        c, w = self.task.num_classes, self.model_config.width
        sums = self.prototypes.new_zeros(len(self.modalities), c, w)
        counts = self.prototypes.new_zeros(len(self.modalities), c)
        for batch in data.probe():
            feats = self.model.encode(batch)
            for i, m in enumerate(self.modalities):
                rows = batch.present[m]
                onehot = F.one_hot(batch.labels[rows], c).to(sums.dtype)
                sums[i] += onehot.T @ feats[m][rows].to(sums.dtype)
                counts[i] += onehot.sum(0)
        sums, counts = step.all_reduce_sum(sums), step.all_reduce_sum(counts)
        self.prototypes.copy_(sums / counts.clamp_min(1.0).unsqueeze(-1))
        hits = total = self.prototypes.new_zeros(())
        for batch in data.heldout():
            self.heldout_index.append(batch.index.cpu())
            m = self.modalities[0]
            dist = torch.cdist(self.model.encode(batch)[m].float(), self.prototypes[0].float())
            hits = hits + (dist.argmin(-1) == batch.labels).sum()
            total = total + len(batch)
        self.heldout_acc.copy_(step.all_reduce_sum(hits) / step.all_reduce_sum(total))

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        self.seen_index.append(batch.index.cpu())
        step.zero_grad()
        feats, logits = step.forward(batch)
        loss = cross_entropy(logits, batch.labels, step, None, ANY)
        proto = torch.zeros((), device=logits.device)
        for i, m in enumerate(self.modalities):
            dist = torch.cdist(feats[m].float(), self.prototypes[i].float())
            term = cross_entropy(-dist, batch.labels, step, batch.present[m], m)
            proto = proto + term
        total = loss + self.hparams.weight * proto
        step.backward(total)
        step.step()
        return {"loss": total.detach(), "proto": proto.detach()}

    def predict(self, batch: MultimodalBatch) -> Prediction:
        feats, logits = self.model(batch)
        per_mod = self.model.modality_logits(feats, batch.present)
        return Prediction(logits, per_mod, batch.present)

    def modality_features(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        return self.model.encode(batch)


@parametrize_with_checks(["toy_prototypes"])
def test_passes_the_conformance_kit(name: str, check) -> None:
    check(name)


def _fit(tmp_path: Path):
    from unipair.engine.loop import Trainer
    from unipair.engine.trainer import make_fabric

    cfg = unipair.RunConfig.from_mapping(
        _engine_config("toy_prototypes", tmp_path, {"name": "run", "train.epochs": 2})
    )
    trainer = Trainer(make_fabric(cfg), cfg)
    return trainer, trainer.fit()


def _indices(ds) -> set[int]:
    return set(ds.fetch(torch.arange(len(ds))).index.tolist())


def test_heldout_part_is_carved_from_train_recorded_and_kept_from_the_optimizer(
    tmp_path: Path,
) -> None:
    trainer, result = _fit(tmp_path)
    method = trainer.method
    assert isinstance(method, ToyPrototypes)
    held_info = result.summary["heldout"]
    n_train = len(trainer.data.train)
    assert held_info["fraction"] == 0.1 and held_info["size"] == math.ceil(0.1 * n_train)
    assert result.summary["split_sizes"]["train"] == n_train - held_info["size"]
    seen = set(torch.cat(method.seen_index).tolist())
    held = set(torch.cat(method.heldout_index).tolist())
    train_rows = _indices(trainer.data.train)
    other = _indices(trainer.data.val) | _indices(trainer.data.test)
    assert len(held) == held_info["size"] and held <= train_rows
    assert not held & seen and not held & other
    assert seen == train_rows - held  # the optimizer sees every other training row
    assert 0.0 <= float(method.heldout_acc) <= 1.0


def test_probe_yields_the_optimizers_rows_in_eval_mode_without_gradient(tmp_path: Path) -> None:
    trainer, _ = _fit(tmp_path)
    method = trainer.method
    modes = []
    probe = trainer.epoch_data.probe
    trainer.epoch_data.probe = lambda: (  # type: ignore[method-assign]
        modes.append((method.training, torch.is_grad_enabled())) or b for b in probe()
    )
    method.train()
    method.on_train_epoch_start(trainer.step, trainer.epoch_data)
    assert modes and set(modes) == {(False, False)}
    assert method.training, "the method is back in train mode after the probe"
    # the prototypes are the class means of the optimizer's rows under the current weights
    ds = trainer.train_set
    batch = ds.__getitems__(list(range(len(ds))))
    method.eval()
    with torch.no_grad():
        feats = method.model.encode(batch)
    for i, m in enumerate(method.modalities):
        for c in range(trainer.data.spec.num_classes):
            rows = (batch.labels == c) & batch.present[m]
            torch.testing.assert_close(method.prototypes[i, c], feats[m][rows].mean(0))


def test_method_without_a_heldout_fraction_gets_a_clear_error() -> None:
    data = EpochData(torch.nn.Linear(1, 1), probe=list)
    with pytest.raises(RuntimeError, match="heldout_fraction"):
        list(data.heldout())
