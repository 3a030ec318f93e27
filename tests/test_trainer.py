"""The Trainer's protocol rules: selection with non-finite scores, gradient accumulation,
tuning runs without the test split, the precision actually used, and the repaired best link."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

import unipair
from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TensorMultimodalDataset
from unipair.engine.precision import cpu_has_native_bf16, resolve_precision
from unipair.engine.state import TrainState
from unipair.errors import ConfigError, RunDirError, TrainingError
from unipair.methods import Prediction, register_method
from unipair.methods.joint import Joint
from unipair.testing import _engine_config

NAN = float("nan")


# ---- selection ------------------------------------------------------------------------------
def test_a_non_finite_score_never_blocks_a_finite_one() -> None:
    state = TrainState()
    assert not state.record({"epoch": 0}, [NAN, NAN])
    assert state.best is None
    assert state.record({"epoch": 1}, [-0.9, -0.9])  # the first finite score becomes best
    assert not state.record({"epoch": 2}, [-math.inf, -0.1])
    assert state.record({"epoch": 3}, [-0.5, NAN])  # a NaN tie-breaker counts as -inf
    assert not state.record({"epoch": 4}, [-0.5, NAN])  # equal: not better
    assert state.record({"epoch": 5}, [-0.5, -0.2])  # tie on the metric, lower val loss wins
    assert (state.best_epoch, state.bad_epochs) == (5, 0)


@register_method("nan_first")
class NaNFirst(Joint):
    """Test-only: predicts NaN logits in the first ``nan_epochs`` validations."""

    description = "test-only: NaN predictions in the first epoch"
    nan_epochs = 1

    def __init__(self, task, model, hparams) -> None:
        super().__init__(task, model, hparams)
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))

    def on_validation_end(self, step, metrics) -> None:
        self.epochs_done += 1

    def predict(self, batch: MultimodalBatch) -> Prediction:
        pred = super().predict(batch)
        if int(self.epochs_done) < self.nan_epochs:
            pred.logits = torch.full_like(pred.logits, NAN)
        return pred


@register_method("always_nan")
class AlwaysNaN(NaNFirst):
    description = "test-only: NaN predictions in every epoch"
    nan_epochs = 10**9


def _cfg(tmp_path: Path, method: str = "joint", **over) -> dict:
    return _engine_config(method, tmp_path, {"name": "run", **over})


def test_a_nan_first_epoch_does_not_block_selection(tmp_path: Path) -> None:
    result = unipair.train(_cfg(tmp_path, "nan_first", **{"train.monitor": "loss"}))
    assert math.isnan(result.history[0]["val/loss"])
    assert result.summary["best_epoch"] == 1


def test_every_epoch_non_finite_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no epoch had a finite validation loss"):
        unipair.train(_cfg(tmp_path, "always_nan", **{"train.monitor": "loss"}))


def test_a_diverged_run_stops_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="training diverged in epoch 0"):
        unipair.train(_cfg(tmp_path, **{"optim.lr": 1e30, "optim.optimizer": "sgd"}))


# ---- gradient accumulation ------------------------------------------------------------------
def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["joint", "pgm"])
def test_accumulation_equals_one_larger_batch(tmp_path: Path, method: str) -> None:
    runs = {}
    for accumulate in (1, 3):
        over = {"name": f"a{accumulate}", "train.batch_size": 50, "train.accumulate": accumulate}
        cfg = _engine_config(method, tmp_path, over)
        cfg["dataset"]["options"]["num_samples"] = 400  # uneven last batch, some rows missing
        cfg["dataset"]["train_missing_rate"] = 0.3
        runs[accumulate] = _rows(unipair.train(cfg).run_dir / "metrics.csv")
    for a, b in zip(runs[1], runs[3], strict=True):
        for key in ("train/loss", "val/loss", "val/acc"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-5), key


def test_methods_that_cannot_accumulate_say_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mla.*cannot accumulate.*optimizer step per modality"):
        unipair.train(_cfg(tmp_path, "mla", **{"train.accumulate": 2}))


# ---- tuning runs never read the test split --------------------------------------------------
def test_no_test_run_never_reads_the_test_split(tmp_path: Path, monkeypatch) -> None:
    from unipair.engine.loop import Trainer
    from unipair.engine.trainer import make_fabric

    cfg = unipair.RunConfig.from_mapping(_cfg(tmp_path, **{"train.test": False}))
    test_rows = set(unipair.datasets.create("synthetic", **cfg.dataset.options).test.index.tolist())
    fetched: list[Tensor] = []
    fetch = TensorMultimodalDataset.fetch

    def spy(self, indices: Tensor) -> MultimodalBatch:
        batch = fetch(self, indices)
        fetched.append(batch.index)
        return batch

    monkeypatch.setattr(TensorMultimodalDataset, "fetch", spy)
    trainer = Trainer(make_fabric(cfg), cfg)
    fetched.clear()  # loading built every split; from here on only what training reads
    result = trainer.fit()
    assert result.summary["test"] is None and result.summary["split_sizes"]["test"] is None
    assert not (result.run_dir / "test_predictions.npz").exists()
    with pytest.raises(RunDirError, match="withheld"):
        len(trainer.data.test)
    assert fetched and not test_rows & set(torch.cat(fetched).tolist())


# ---- precision --------------------------------------------------------------------------------
def test_auto_precision_is_the_fastest_native_one() -> None:
    want = "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    assert resolve_precision("auto", "cpu") == want
    assert resolve_precision("16-mixed", "cpu") == "16-mixed"  # explicit choices are kept


def test_summary_records_the_precision_actually_used(tmp_path: Path) -> None:
    with pytest.warns(UserWarning):  # fp16 AMP does not exist on CPU: Lightning uses bf16
        result = unipair.train(_cfg(tmp_path, **{"fabric.precision": "16-mixed"}))
    assert result.summary["precision"] == "bf16-mixed"
    assert result.summary["precision_requested"] == "16-mixed"


# ---- a crash between last.ckpt and best.ckpt -------------------------------------------------
def test_resume_relinks_best_from_the_epoch_recorded_in_last(tmp_path: Path, monkeypatch) -> None:
    from unipair.engine import loop

    cfg = _cfg(tmp_path, **{"train.epochs": 3, "train.deterministic": True})
    full = unipair.train({**cfg, "name": "full"})
    original = loop.snapshot_checkpoint
    calls = {"n": 0}

    def crash_on_second_link(fabric, src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 1 improved: last.ckpt written, best.ckpt not yet linked
            raise KeyboardInterrupt("killed between last.ckpt and best.ckpt")
        original(fabric, src, dst)

    monkeypatch.setattr(loop, "snapshot_checkpoint", crash_on_second_link)
    with pytest.raises(KeyboardInterrupt):
        unipair.train({**cfg, "name": "cut"})
    monkeypatch.setattr(loop, "snapshot_checkpoint", original)
    run = tmp_path / "cut"
    assert torch.load(run / "best.ckpt", weights_only=True)["state"]["epoch"] == 0
    resumed = unipair.train(cfg, resume=run)
    assert resumed.summary["best_epoch"] == full.summary["best_epoch"]
    assert resumed.test == full.test


# ---- fabric.compile ---------------------------------------------------------------------------
@pytest.mark.slow
def test_compiled_encoders_train_like_eager_ones_and_checkpoint_alike(
    tmp_path: Path, monkeypatch
) -> None:
    """``fabric.compile`` compiles every encoder in place: the same checkpoint keys and, up to
    the fused kernels' rounding, the same training."""
    import unipair.engine.loop as loop

    compiled: list[list[str]] = []
    real = loop.compile_encoders
    monkeypatch.setattr(loop, "compile_encoders", lambda m: compiled.append(real(m)) or [])
    rows, keys = {}, {}
    for flag in (False, True):
        result = unipair.train(_cfg(tmp_path, name=f"c{flag}", **{"fabric.compile": flag}))
        rows[flag] = _rows(result.run_dir / "metrics.csv")
        keys[flag] = set(torch.load(result.run_dir / "best.ckpt", weights_only=False)["method"])
    assert compiled == [["model.encoders.m0", "model.encoders.m1", "model.encoders.m2"]]
    assert keys[True] == keys[False]
    for a, b in zip(rows[False], rows[True], strict=True):
        assert float(a["val/loss"]) == pytest.approx(float(b["val/loss"]), abs=1e-3)
