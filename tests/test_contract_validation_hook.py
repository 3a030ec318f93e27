"""A method that needs the validation metrics of every epoch, written in this one file against
the public contract (no engine change): MSLR-style per-modality learning-rate scaling, where
each encoder's gradient is scaled by its validation accuracy over the mean of the last few.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import Field
from torch import Tensor

import unipair
from unipair.data.batch import MultimodalBatch
from unipair.methods import MethodTags, TrainStep, register_method
from unipair.methods.joint import Joint, JointHparams
from unipair.testing import _engine_config, parametrize_with_checks


class ToyMSLRHparams(JointHparams):
    window: int = Field(3, ge=1, description="epochs in the running mean of val accuracy")


@register_method("toy_mslr")
class ToyMSLR(Joint):
    """Joint training; after each validation, c_m = acc_m / mean(acc_m over the last
    ``window`` epochs); every encoder gradient of modality m is scaled by c_m."""

    description = "test-only: per-modality gradient scale from validation accuracy"
    Hparams = ToyMSLRHparams
    hparams: ToyMSLRHparams
    tags = MethodTags(accumulation=True)

    def __init__(self, task, model, hparams) -> None:
        super().__init__(task, model, hparams)
        m = len(task.names)
        self.register_buffer("history", torch.full((hparams.window, m), float("nan")))
        self.register_buffer("coeff", torch.ones(m))
        self.seen: list[dict[str, float]] = []  # what the hook received (for the tests)

    def on_validation_end(self, step: TrainStep, metrics: Mapping[str, float]) -> None:
        self.seen.append(dict(metrics))
        acc = torch.tensor([metrics[f"acc/{m}"] for m in self.modalities])
        self.history.copy_(torch.cat([self.history[1:], acc[None].to(self.history)]))
        self.coeff.copy_(acc.to(self.coeff) / self.history.nanmean(0).clamp_min(1e-6))

    def after_backward(self, batch: MultimodalBatch, outputs: Any, step: TrainStep):
        with torch.no_grad():
            for i, m in enumerate(self.modalities):
                for p in self.model.encoders[m].parameters():
                    if p.grad is not None:
                        p.grad.mul_(self.coeff[i])
        return {f"coeff/{m}": self.coeff[i].detach() for i, m in enumerate(self.modalities)}


@parametrize_with_checks(["toy_mslr"])
def test_passes_the_conformance_kit(name: str, check) -> None:
    check(name)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_hook_gets_each_epochs_validation_metrics(tmp_path: Path) -> None:
    from unipair.engine.loop import Trainer
    from unipair.engine.trainer import make_fabric

    cfg = unipair.RunConfig.from_mapping(
        _engine_config("toy_mslr", tmp_path, {"name": "run", "train.epochs": 4})
    )
    trainer = Trainer(make_fabric(cfg), cfg)
    result = trainer.fit()
    method = trainer.method
    assert isinstance(method, ToyMSLR)
    rows = _rows(result.run_dir / "metrics.csv")
    assert len(method.seen) == len(rows) == 4
    for seen, row in zip(method.seen, rows, strict=True):
        for key, value in seen.items():
            assert float(row[f"val/{key}"]) == pytest.approx(value, rel=1e-5), key
    # each epoch trains with the coefficients of the validations before it (window 3)
    names = method.modalities
    accs = torch.tensor([[float(r[f"val/acc/{m}"]) for m in names] for r in rows])
    for e, row in enumerate(rows):
        logged = torch.tensor([float(row[f"train/coeff/{m}"]) for m in names])
        want = torch.ones(len(names)) if e == 0 else accs[e - 1] / accs[max(0, e - 3) : e].mean(0)
        torch.testing.assert_close(logged, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(method.coeff, accs[-1] / accs[-3:].mean(0), rtol=1e-5, atol=1e-6)


def test_state_changed_by_the_hook_is_checkpointed(tmp_path: Path) -> None:
    cfg = _engine_config("toy_mslr", tmp_path, {"name": "run", "train.epochs": 3})
    result = unipair.train(cfg)
    state = torch.load(result.run_dir / "last.ckpt", weights_only=True)
    coeff: Tensor = state["method"]["coeff"]
    assert not torch.equal(coeff, torch.ones_like(coeff))
