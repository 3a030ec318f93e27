"""A method that needs frozen models of other finished runs, written in this one file against
the public contract (no engine change): UMT-style distillation from unimodal teachers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import Field
from torch import Tensor

import unipair
from unipair.data.batch import MultimodalBatch
from unipair.errors import RunDirError
from unipair.methods import AuxRun, TrainStep, register_method
from unipair.methods.base import ANY
from unipair.methods.common import cross_entropy
from unipair.methods.joint import Joint, JointHparams
from unipair.testing import _engine_config, parametrize_with_checks


class ToyUMTHparams(JointHparams):
    weight: float = Field(1.0, ge=0.0, description="weight of the feature distillation")


@register_method("toy_umt")
class ToyUMT(Joint):
    """Joint training plus, per modality, the mean squared distance between the student's
    encoder features and those of a frozen unimodal teacher trained with the same seed."""

    description = "test-only: distillation from frozen unimodal teacher runs"
    Hparams = ToyUMTHparams
    hparams: ToyUMTHparams

    def auxiliary_runs(self) -> dict[str, AuxRun]:
        return {f"teacher/{m}": AuxRun("unimodal", {"modality": m}) for m in self.modalities}

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        step.zero_grad()
        feats, logits = step.forward(batch)
        loss = cross_entropy(logits, batch.labels, step, None, ANY)
        distill = torch.zeros((), device=logits.device)
        for m in self.modalities:
            teacher = self.auxiliary[f"teacher/{m}"]
            with torch.no_grad():
                target = teacher.model.encode(batch.only([m]))[m]
            err = (feats[m].float() - target.float()).pow(2).mean(-1)
            distill = distill + step.mean(err, batch.present[m], m)
        total = loss + self.hparams.weight * distill
        step.backward(total)
        step.step()
        return {"loss": total.detach(), "distill": distill.detach()}


@parametrize_with_checks(["toy_umt"])
def test_passes_the_conformance_kit(name: str, check) -> None:
    check(name)


def _teacher(tmp: Path, modality: str, seed: int = 0, **over: Any) -> str:
    cfg = _engine_config("unimodal", tmp, {"train.epochs": 1, "train.seed": seed, **over})
    cfg["method"] = {"name": "unimodal", "hparams": {"modality": modality}}
    cfg["name"] = f"teacher-{modality}-s{seed}"
    return str(unipair.train(cfg).run_dir)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("teachers")
    return {f"teacher/{m}": _teacher(tmp, m) for m in ("m0", "m1", "m2")}


def _student(tmp: Path, aux: dict[str, str], **over: Any) -> dict[str, Any]:
    cfg = _engine_config("toy_umt", tmp, {"name": "student", **over})
    cfg["method"]["aux"] = aux
    return cfg


def test_teachers_are_frozen_recorded_and_not_saved(tmp_path: Path, teachers) -> None:
    before = {
        k: torch.load(Path(d) / "best.ckpt", weights_only=True)["method"]
        for k, d in teachers.items()
    }
    result = unipair.train(_student(tmp_path, teachers))
    recorded = result.summary["auxiliary"]
    assert set(recorded) == set(teachers)
    for key, d in teachers.items():
        assert recorded[key]["run_dir"] == str(Path(d).resolve())
        assert recorded[key]["method"] == "unimodal"
    state = torch.load(result.run_dir / "best.ckpt", weights_only=True)["method"]
    assert not any("teacher" in k or "auxiliary" in k for k in state)
    rows = result.history
    assert all(row["train/distill"] > 0 for row in rows)
    after = {
        k: torch.load(Path(d) / "best.ckpt", weights_only=True)["method"]
        for k, d in teachers.items()
    }
    for k in before:  # the teachers' files are untouched
        for name, value in before[k].items():
            assert torch.equal(value, after[k][name])


def test_missing_auxiliary_runs_are_named(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"teacher/m0 \(unimodal\).*--set method.aux"):
        unipair.train(_student(tmp_path, {}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("seed", "has seed 1; this run has 0"),
        ("modality", "expected 'unimodal' with {'modality': 'm0'}"),
        ("data", "was trained on other data"),
        ("unfinished", "has not finished"),
    ],
)
def test_mismatched_auxiliary_runs_are_refused(
    tmp_path: Path, teachers, change: str, message: str
) -> None:
    aux = dict(teachers)
    if change == "seed":
        aux["teacher/m0"] = _teacher(tmp_path, "m0", seed=1)
    elif change == "modality":
        aux["teacher/m0"] = teachers["teacher/m1"]
    elif change == "data":
        other = {"dataset.options.noise": 2.0}
        aux["teacher/m0"] = _teacher(tmp_path, "m0", **other)
    else:
        unfinished = tmp_path / "unfinished"
        unfinished.mkdir()
        (unfinished / "config.yaml").hardlink_to(Path(teachers["teacher/m0"]) / "config.yaml")
        aux["teacher/m0"] = str(unfinished)
    with pytest.raises(RunDirError, match=message):
        unipair.train(_student(tmp_path, aux))


@pytest.mark.slow
@pytest.mark.parametrize("unimodal", [True, False])
def test_compare_trains_the_teachers_first(tmp_path: Path, unimodal: bool) -> None:
    from unipair.evaluation.compare_cli import run_compare_command

    cfg = _engine_config("joint", tmp_path, {"train.epochs": 1})
    for key in ("method", "out"):
        cfg.pop(key)
    cfg["compare"] = {"methods": ["toy_umt"], "seeds": [0], "missing_rates": [0.0, 0.5]}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    result = run_compare_command(
        dataset=None, methods=None, seeds=None, config=str(path), overrides=[], jobs=1,
        epochs=None, out=str(out), unimodal=unimodal,
    )  # fmt: skip
    assert not result.failures, result.failures
    labels = [r["label"] for r in result.runs]
    assert labels.count("toy_umt") == 1
    assert {f"unimodal:{m}" for m in ("m0", "m1", "m2")} <= set(labels)
    student = next(r for r in result.runs if r["label"] == "toy_umt")
    aux = student["summary"]["auxiliary"]
    for m in ("m0", "m1", "m2"):
        assert aux[f"teacher/{m}"]["run_dir"] == str(
            (out / "runs" / f"unimodal-{m}" / "seed0").resolve()
        )
    # rerunning reuses every run, the teachers included
    again = run_compare_command(
        dataset=None, methods=None, seeds=None, config=str(path), overrides=[], jobs=1,
        epochs=None, out=str(out), unimodal=unimodal,
    )  # fmt: skip
    assert all(r["reused"] for r in again.runs)
    summary = json.loads((out / "runs" / "toy_umt" / "seed0" / "summary.json").read_text())
    assert summary["auxiliary"] == aux
