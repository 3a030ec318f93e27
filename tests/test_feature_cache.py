"""Frozen-feature caching (``train.feature_cache``): same results, invalidation, refusals.

A backbone with random weights (unipair's ResNet-18, or the ``tiny`` CNN of ``backbones.py``)
is saved by the test and loaded with ``weights:`` and ``freeze: all``; data are synthetic arrays
in memory, or a manifest of PNG images and ``.npy`` vectors written by the test.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import unipair
from backbones import TinyBackbone, config, save_backbone
from backbones import tiny_encoder as tiny_encoder  # the fixture
from unipair.data.dataset import FeatureInputs, TensorMultimodalDataset
from unipair.engine.config import RunConfig
from unipair.engine.feature_cache import plan_feature_cache
from unipair.models.encoders import ENCODERS
from unipair.models.pretrained import FreezeSpec

pytestmark = pytest.mark.usefixtures("tiny_encoder")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One weights file for the tests that do not rewrite it."""
    path = tmp_path_factory.mktemp("weights") / "backbone.pth"
    save_backbone(path)
    return path


@pytest.fixture
def own_weights(tmp_path: Path) -> Path:
    path = tmp_path / "backbone.pth"
    save_backbone(path)
    return path


def cache_info(result) -> dict[str, Any]:
    return result.summary["feature_cache"]["img"]


def computed(result) -> dict[str, bool]:
    return {s: f["computed"] for s, f in cache_info(result)["files"].items()}


def paths(result) -> set[str]:
    return {f["path"] for f in cache_info(result)["files"].values()}


# ------------------------------------------------------------------------------- same results
def test_cached_features_give_the_same_run(tmp_path: Path) -> None:
    from unipair.evaluation.evaluate import LoadedRun

    weights = tmp_path / "resnet18.pth"
    save_backbone(weights, kind="resnet18")
    runs = {}
    for mode in ("off", "auto"):
        cfg = config(
            tmp_path,
            {"img": {"weights": str(weights), "freeze": "all"}},
            epochs=2,
            name=mode,
            kind="resnet18",
            train={"feature_cache": mode, "deterministic": True},
        )
        runs[mode] = unipair.train(cfg)
    off, auto = runs["off"], runs["auto"]
    assert off.summary["feature_cache"]["img"] == {
        "cached": False,
        "reason": "train.feature_cache: off",
    }
    assert cache_info(auto)["cached"] and all(computed(auto).values())
    for a, b in zip(off.history, auto.history, strict=True):
        for key in a:
            if key.startswith(("val/", "train/")):
                assert a[key] == b[key], key
    assert off.test == auto.test
    # the checkpoint holds the real backbone, so evaluation reads raw images
    sd = torch.load(auto.run_dir / "best.ckpt", weights_only=True)["method"]
    source = torch.load(weights, weights_only=True)
    assert all(torch.equal(sd[f"model.encoders.img.backbone.{k}"], v) for k, v in source.items())
    assert LoadedRun(auto.run_dir).evaluate("test")["acc"] == pytest.approx(auto.test["acc"])


def test_a_rewritten_weights_file_recomputes_the_features(
    tmp_path: Path, own_weights: Path
) -> None:
    weights = own_weights
    encoders = {"img": {"weights": str(weights), "freeze": "all"}}
    first = unipair.train(config(tmp_path, encoders, name="a"))
    again = unipair.train(config(tmp_path, encoders, name="b", train={"seed": 1}))
    assert not any(computed(again).values()) and paths(again) == paths(first)
    save_backbone(weights, seed=1)
    rewritten = unipair.train(config(tmp_path, encoders, name="c"))
    assert all(computed(rewritten).values()) and not paths(rewritten) & paths(first)
    assert cache_info(rewritten)["weights_sha256"] != cache_info(first)["weights_sha256"]


def test_feature_cache_dir_is_configurable(tmp_path: Path, weights: Path) -> None:
    folder = tmp_path / "elsewhere"
    encoders = {"img": {"weights": str(weights), "freeze": "all"}}
    result = unipair.train(config(tmp_path, encoders, train={"feature_cache_dir": str(folder)}))
    assert {Path(p).parent for p in paths(result)} == {folder}
    assert sorted(p.name.split("-")[:2] for p in folder.iterdir()) == [
        ["img", "test"], ["img", "train"], ["img", "val"],
    ]  # fmt: skip


# ------------------------------------------------------------------------------- manifests
def write_manifest(folder: Path, n: int = 48) -> Path:
    """PNG images whose brightness follows the label, and 8-d vectors, one row each."""
    Image = pytest.importorskip("PIL.Image", reason="Pillow (the media extra) is not installed")

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        label = i % 2
        pixels = rng.integers(0, 128, size=(20, 20, 3)) + 100 * label
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
        np.save(folder / f"{i}.npy", rng.normal(size=8).astype(np.float32) + label)
        rows.append({"img": f"{i}.png", "vec": f"{i}.npy", "label": label})
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["img", "vec", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def manifest_config(
    tmp_path: Path, weights: Path, manifest: Path, name: str, augment: bool = False, **image: Any
) -> dict[str, Any]:
    cfg = config(tmp_path, {"img": {"weights": str(weights), "freeze": "all"}}, name=name)
    modalities = {"img": {"kind": "image", "size": 16, **image}, "vec": {"kind": "array",
                  "dims": [8]}}  # fmt: skip
    cfg["dataset"] = {
        "name": str(manifest),
        "options": {"modalities": modalities, "augment": augment, "val_fraction": 0.25},
    }
    return cfg


def test_a_reader_option_or_a_changed_file_recomputes_the_features(
    tmp_path: Path, weights: Path
) -> None:
    manifest = write_manifest(tmp_path / "data")
    first = unipair.train(manifest_config(tmp_path, weights, manifest, "a"))
    assert all(computed(first).values())
    again = unipair.train(manifest_config(tmp_path, weights, manifest, "b"))
    assert not any(computed(again).values()) and paths(again) == paths(first)
    # another normalisation: the same shapes, other inputs
    other = manifest_config(tmp_path, weights, manifest, "c", eval={"mean": [0.5, 0.5, 0.5]})
    changed = unipair.train(other)
    assert all(computed(changed).values()) and not paths(changed) & paths(first)
    # one image rewritten: the split that holds it is computed again
    image = tmp_path / "data" / "0.png"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = unipair.train(manifest_config(tmp_path, weights, manifest, "d"))
    assert sum(computed(touched).values()) == 1


def test_an_augmented_modality_is_never_cached(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "data")
    cfg = manifest_config(tmp_path, weights, manifest, "a", augment=True)
    cfg["logging"]["progress"] = "plain"
    result = unipair.train(cfg)
    reason = cache_info(result)["reason"]
    assert not cache_info(result)["cached"]
    assert "its training inputs are random" in reason and "image reader" in reason, reason
    assert "augment: true" in reason
    assert f"feature cache: img not cached: {reason}" in capsys.readouterr().out
    assert not (tmp_path / "runs" / ".feature_cache").exists()


# ------------------------------------------------------------------------------- the plan
@pytest.fixture(scope="module")
def built(weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """A method with a frozen resnet18 on ``img``, its data and its config."""
    raw = config(tmp_path_factory.mktemp("plan"), {"img": {"weights": str(weights),
                                                           "freeze": "all"}})  # fmt: skip
    cfg = RunConfig.from_mapping(raw)
    data = unipair.datasets.create(cfg.dataset.name, **cfg.dataset.options)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(ENCODERS._entries, "tiny", TinyBackbone)
        return unipair.methods.create("joint", data.spec, cfg.model), data, cfg


@pytest.mark.parametrize(
    ("freeze", "epochs", "reason"),
    [
        ("all", 3, None),
        ("until_epoch:3", 3, None),
        ("until_epoch:2", 3, "freeze: until_epoch:2 trains the encoder from epoch 2"),
        ("stem", 3, "freeze: stem trains part of the encoder from epoch 0"),
    ],
)
def test_only_an_encoder_frozen_for_the_whole_run_is_cached(
    built, freeze: str, epochs: int, reason: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    method, data, cfg = built
    monkeypatch.setattr(method.model.encoders["img"], "freeze", FreezeSpec.parse(freeze))
    cfg = cfg.model_copy(deep=True)
    cfg.train.epochs = epochs
    assert plan_feature_cache(method, cfg, data) == {"img": reason}
    cfg.train.feature_cache = "off"
    assert plan_feature_cache(method, cfg, data) == {"img": "train.feature_cache: off"}


def test_auxiliary_runs_keep_raw_inputs(built, monkeypatch: pytest.MonkeyPatch) -> None:
    method, data, cfg = built
    monkeypatch.setattr(method, "auxiliary", {"teacher": method})
    assert plan_feature_cache(method, cfg, data) == {
        "img": "the method's auxiliary runs read the raw inputs"
    }


# ------------------------------------------------------------------------------- data layer
def test_feature_inputs_replace_one_modality_and_keep_the_others() -> None:
    n = 6
    base = TensorMultimodalDataset(
        {"a": torch.randn(n, 3, 4, 4), "b": torch.randn(n, 5)},
        torch.arange(n) % 2,
        {"a": torch.tensor([1, 1, 0, 1, 1, 1]).bool(), "b": torch.ones(n, dtype=torch.bool)},
        index=torch.arange(10, 10 + n),
    )
    assert base.augmentation() == {}
    assert set(base.without(["a"]).present) == {"b"}
    feats = torch.randn(n, 7)
    ds = FeatureInputs(base, {"a": feats}, {"a": base.present["a"]}, base.index)
    batch = ds.__getitems__([4, 2, 0])
    assert list(batch.inputs) == ["a", "b"]
    assert torch.equal(batch.inputs["a"], feats[[4, 2, 0]])
    assert torch.equal(batch.inputs["b"], base.inputs["b"][[4, 2, 0]])
    assert batch.present["a"].tolist() == [True, False, True]
    assert batch.index.tolist() == [14, 12, 10]
    assert torch.equal(ds.eval_view().fetch(torch.tensor([1])).inputs["a"], feats[[1]])
    # the inputs' fingerprint follows their bytes
    changed = TensorMultimodalDataset(
        {"a": base.inputs["a"] + 1, "b": base.inputs["b"]}, base.labels, base.present, base.index
    )
    assert changed.input_fingerprint("a") != base.input_fingerprint("a")
    assert changed.input_fingerprint("b") == base.input_fingerprint("b")


def test_a_manifest_says_which_modalities_augment(tmp_path: Path) -> None:
    from unipair.data.manifest import load_manifest

    manifest = write_manifest(tmp_path / "data", n=12)
    modalities = {"img": {"kind": "image", "size": 16}, "vec": {"kind": "array", "dims": [8]}}
    data = load_manifest(manifest, modalities, val_fraction=0.25, test_fraction=0.25)
    assert set(data.train.augmentation()) == {"img"}
    assert data.train.eval_view().augmentation() == {} and data.val.augmentation() == {}
    without = data.val.without(["img"])
    batch = without.__getitems__([0, 1])
    assert list(batch.inputs) == ["vec"] and set(without.readers) == {"vec"}
    fixed = load_manifest(manifest, modalities, val_fraction=0.25, test_fraction=0.25,
                          augment=False)  # fmt: skip
    assert fixed.train.augmentation() == {}


def test_resnet18_frozen_features_are_what_forward_projects() -> None:
    from unipair.models.encoders import ResNet18Encoder

    enc = ResNet18Encoder((3, 16, 16), 8).eval()
    x = torch.randn(2, 3, 16, 16)
    z = enc.frozen_features(x)
    assert z.shape == (2, 512)
    assert torch.equal(enc(x), enc.proj(z))
    enc.reads_features = True  # what the feature cache sets: the input is z
    assert torch.equal(enc(z), enc.proj(z))
