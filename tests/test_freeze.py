"""Freezing in the engine and the provenance of encoder weights.

Backbones with random weights (BatchNorm statistics moved off their defaults, so a frozen run
that updated them would show) are saved by each test and loaded with ``weights:``; runs are one
or two epochs on small synthetic images (``backbones.py``), one torch thread.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import unipair
from backbones import IMG, backbone_of, config, interrupted, same, save_backbone
from backbones import tiny_encoder as tiny_encoder  # the fixture
from unipair.errors import ConfigError, RunDirError
from unipair.models.pretrained import FreezeSpec, file_digest

pytestmark = pytest.mark.usefixtures("tiny_encoder")


@pytest.fixture
def weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    path = tmp_path / "backbone.pth"
    return path, save_backbone(path)


def _spec():
    from unipair.data.dataset import ModalitySpec, TaskSpec

    return TaskSpec((ModalitySpec("img", tuple(IMG)), ModalitySpec("vec", (8,))), 2)


def _model_config(path: Path, freeze: str, kind: str = "tiny"):
    from unipair.models.multimodal import ModelConfig

    return ModelConfig.model_validate(
        {
            "width": 16,
            "encoders": {
                "img": {"name": kind, "options": {"weights": str(path), "freeze": freeze}},
                "vec": {"name": "mlp", "options": {"hidden": [16]}},
            },
        }
    )


# ------------------------------------------------------------------------------- freezing
def test_freeze_all_keeps_weights_and_batchnorm_statistics_bit_identical(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    source = save_backbone(path, kind="resnet18")
    encoders = {"img": {"weights": str(path), "freeze": "all"}}
    # the engine's freezing itself: the backbone runs in every step, no cached features
    cfg = config(tmp_path, encoders, kind="resnet18", train={"feature_cache": "off"})
    result = unipair.train(cfg)
    last = result.run_dir / "last.ckpt"
    assert same(backbone_of(last), source), "a frozen backbone moved"
    # the optimizer holds every parameter but stepped only those with a gradient
    ckpt = torch.load(last, weights_only=True)
    groups = ckpt["optimizer"]["param_groups"]
    held = sum(len(g["params"]) for g in groups)
    method = unipair.methods.create("joint", _spec(), _model_config(path, "all", "resnet18"))
    assert held == len(list(method.parameters()))
    frozen = len(list(method.model.encoders["img"].backbone.parameters()))
    assert len(ckpt["optimizer"]["state"]) == held - frozen


def test_until_epoch_1_trains_the_backbone_from_epoch_1_also_after_a_resume(
    tmp_path: Path, weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, source = weights
    cfg = config(tmp_path, {"img": {"weights": str(path), "freeze": "until_epoch:1"}}, epochs=2)
    run = interrupted(cfg, monkeypatch, after=1)
    assert same(backbone_of(run / "last.ckpt"), source), "epoch 0 moved a frozen backbone"
    unipair.train(cfg, resume=run)  # the resumed epoch 1 unfreezes it
    after = backbone_of(run / "last.ckpt")
    assert not torch.equal(after["stem.0.weight"], source["stem.0.weight"])
    assert not torch.equal(after["stem.1.running_mean"], source["stem.1.running_mean"])
    assert not torch.equal(after["body.0.weight"], source["body.0.weight"])


def test_parameter_groups_include_frozen_parameters(tmp_path: Path, weights) -> None:
    path, _ = weights
    for name in ("joint", "mla", "pgm"):
        method = unipair.methods.create(name, _spec(), _model_config(path, "all"))
        encoder = method.modality_encoders()["img"]
        encoder.freeze.apply(encoder, 0)
        assert not any(p.requires_grad for p in encoder.backbone.parameters())
        grouped = {id(p) for g in method.parameter_groups() for p in g.params}
        assert grouped == {id(p) for p in method.parameters()}, name


def test_pgm_lr_groups_with_a_partly_frozen_encoder(tmp_path: Path, weights) -> None:
    path, source = weights
    hparams = {"lr_mult": {"img": {"encoder": 0.5, "uni": 2.0}, "shared": {"task": 3.0}}}
    cfg = config(
        tmp_path,
        {"img": {"weights": str(path), "freeze": "stem"}},
        method={"name": "pgm", "hparams": hparams},
    )
    result = unipair.train(cfg)
    row = result.history[-1]
    assert row["lr/img/encoder"] == pytest.approx(0.5e-2)
    assert row["lr/img/uni"] == pytest.approx(2e-2)
    assert row["lr/shared/task"] == pytest.approx(3e-2)
    assert row["lr/vec/encoder"] == pytest.approx(1e-2)
    after = backbone_of(result.run_dir / "last.ckpt", "pgm.encoders.img.")
    stem = {k: v for k, v in after.items() if k.startswith("stem.")}
    assert same(stem, {k: v for k, v in source.items() if k.startswith("stem.")})
    assert not torch.equal(after["body.0.weight"], source["body.0.weight"])
    assert not torch.equal(after["body.1.running_var"], source["body.1.running_var"])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_decay_and_momentum_never_move_a_parameter_without_gradient(optimizer: str) -> None:
    frozen, trained = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = (
        torch.optim.AdamW([frozen, trained], lr=0.1, weight_decay=1.0)
        if optimizer == "adamw"
        else torch.optim.SGD([frozen, trained], lr=0.1, momentum=0.9, weight_decay=1.0)
    )
    for _ in range(3):
        trained.grad = torch.full((3,), 0.5)  # frozen.grad stays None, as for requires_grad=False
        opt.step()
    assert torch.equal(frozen, torch.ones(3))
    assert not torch.equal(trained, torch.ones(3))


def test_freezing_needs_ddp_that_finds_unused_parameters(tmp_path: Path, weights) -> None:
    path, _ = weights
    cfg = config(
        tmp_path,
        {"img": {"weights": str(path), "freeze": "all"}},
        fabric={"devices": 2, "strategy": "fsdp"},
    )
    with pytest.raises(
        ConfigError, match=r"model\.encoders\.img\.options\.freeze.*fabric\.strategy"
    ):
        unipair.train(cfg)


@pytest.mark.slow
def test_two_processes_train_with_frozen_encoders(tmp_path: Path, weights) -> None:
    path, source = weights
    encoders = {
        "img": {"weights": str(path), "freeze": "all"},  # cached: rank 0 computes, rank 1 reads
        "late": {"weights": str(path), "freeze": "until_epoch:1"},
        "stem": {"weights": str(path), "freeze": "stem"},
    }
    cfg = config(tmp_path, encoders, epochs=2, fabric={"devices": 2, "strategy": "ddp_fork"})
    result = unipair.train(cfg)
    assert len(result.history) == 2
    assert result.summary["feature_cache"]["img"]["cached"]
    last = result.run_dir / "last.ckpt"
    assert same(backbone_of(last), source)
    late = backbone_of(last, "model.encoders.late.")
    assert not torch.equal(late["body.0.weight"], source["body.0.weight"])
    stem = backbone_of(last, "model.encoders.stem.")
    assert torch.equal(stem["stem.0.weight"], source["stem.0.weight"])
    assert torch.equal(stem["stem.1.running_var"], source["stem.1.running_var"])
    assert not torch.equal(stem["body.0.weight"], source["body.0.weight"])


# ------------------------------------------------------------------------------- provenance
def test_summary_records_every_weights_file(tmp_path: Path, weights) -> None:
    path, source = weights
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in source.items() if not k.startswith("body.")}, partial)
    encoders = {
        "img": {"weights": str(path)},
        "other": {"weights": str(partial), "strict": False},
    }
    result = unipair.train(config(tmp_path, encoders))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    sha256, size = file_digest(path)
    assert summary["weights"]["img"]["sha256"] == sha256
    assert summary["weights"]["img"]["size"] == size
    assert summary["weights"]["img"]["path"] == str(path.resolve())
    assert summary["weights"]["img"]["missing"] == []
    assert "vec" not in summary["weights"]
    other = summary["weights"]["other"]
    assert other["sha256"] == file_digest(partial)[0]
    assert "body.0.weight" in other["missing"] and other["unexpected"] == []
    ckpt = torch.load(result.run_dir / "best.ckpt", weights_only=True)
    assert ckpt["weights"] == summary["weights"]


def test_resume_refuses_a_weights_file_whose_hash_changed(
    tmp_path: Path, weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = weights
    cfg = config(tmp_path, {"img": {"weights": str(path)}}, epochs=2)
    run = interrupted(cfg, monkeypatch, after=1)
    before = file_digest(path)[0]
    save_backbone(path, seed=1)  # same name, other weights
    after = file_digest(path)[0]
    with pytest.raises(RunDirError) as err:
        unipair.train(cfg, resume=run)
    message = str(err.value)
    for part in ("modality 'img'", str(path.resolve()), before, after):
        assert part in message, message


def test_compare_does_not_reuse_a_run_whose_weights_changed(
    tmp_path: Path, weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    from unipair.engine.config import RunConfig
    from unipair.evaluation import compare

    # what is reused is decided before a run's analyses, which are not under test here
    monkeypatch.setattr(compare, "analyze_run", lambda run, rates: {})
    monkeypatch.setattr(compare, "probe_run", lambda run: {})
    path, _ = weights
    cfg = RunConfig.from_mapping(config(tmp_path, {"img": {"weights": str(path)}}))
    spec = compare.RunSpec("joint", 0, cfg.model_dump(mode="json"))
    assert not compare._execute_run(spec, [0.0])["reused"]
    assert compare._execute_run(spec, [0.0])["reused"]
    before = file_digest(path)[0]
    save_backbone(path, seed=1)
    with pytest.raises(RunDirError) as err:
        compare._execute_run(spec, [0.0])
    for part in ("other weights", "modality 'img'", before, file_digest(path)[0]):
        assert part in str(err.value), err.value


def test_freeze_spec_is_found_on_every_encoder_that_takes_it(tmp_path: Path, weights) -> None:
    from unipair.models.pretrained import freezable

    path, _ = weights
    method = unipair.methods.create("mla", _spec(), _model_config(path, "stem"))
    found = freezable(method)
    assert list(found) == ["encoders.img"]  # the mlp takes no freeze
    assert found["encoders.img"].freeze == FreezeSpec("stem")
