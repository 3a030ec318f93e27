"""Encoders, fusions and the multimodal model: shapes, defaults, missing-modality semantics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import unipair
from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import ModalitySpec, TaskSpec
from unipair.engine.config import load_config
from unipair.errors import ConfigError
from unipair.models.encoders import create_encoder, default_encoder, list_encoders
from unipair.models.fusion import FUSIONS, create_fusion
from unipair.models.multimodal import ModelConfig, MultimodalModel


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((76,), "mlp"), ((50, 12), "transformer"), ((1, 28, 28), "cnn"), ((1, 40, 100), "cnn"),
     ((3, 224, 224), "resnet18"), ((3, 3, 64, 64), "resnet18")],
)  # fmt: skip
def test_default_encoder_follows_the_input_shape(shape, expected) -> None:
    assert default_encoder(shape)[0] == expected
    enc = create_encoder(None, shape, 24).eval()
    with torch.no_grad():
        assert enc(torch.randn(2, *shape)).shape == (2, 24)


def test_registry_lists_encoders_and_rejects_bad_options() -> None:
    assert set(list_encoders()) >= {"mlp", "cnn", "resnet18", "transformer"}
    with pytest.raises(ConfigError, match="encoder 'mlp'"):
        create_encoder("mlp", (4,), 8, depth=3)
    with pytest.raises(KeyError, match="unknown encoder 'vit'"):
        create_encoder("vit", (3, 32, 32), 8)


def test_resnet_encodes_clips_frame_by_frame_and_pools_over_time() -> None:
    enc = create_encoder("resnet18", (3, 4, 32, 32), 512).eval()
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        pooled = enc(clip)
        frames = torch.stack([enc(clip[:, :, t]) for t in range(4)], 1).mean(1)
    torch.testing.assert_close(pooled, frames, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in enc.backbone.parameters()) == pytest.approx(11.17e6, rel=0.01)


def test_cnn_encodes_clips_frame_by_frame_and_pools_over_time() -> None:
    enc = create_encoder("cnn", (3, 5, 16, 16), 24, channels=[8, 16]).eval()
    clip = torch.randn(2, 3, 5, 16, 16)
    with torch.no_grad():
        pooled = enc(clip)
        frames = torch.stack([enc(clip[:, :, t]) for t in range(5)], 1).mean(1)
    torch.testing.assert_close(pooled, frames, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match=r"\[C, T, H, W\]"):
        create_encoder("cnn", (3, 16), 24)


def test_transformer_can_return_the_sequence() -> None:
    enc = create_encoder("transformer", (10, 6), 16, pool="none")
    assert enc(torch.randn(3, 10, 6)).shape == (3, 10, 16) and enc.sequence_output


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_fusions_ignore_missing_modalities(fusion: str) -> None:
    torch.manual_seed(0)
    f = create_fusion(fusion, ["a", "b", "c"], 8)
    feats = {m: torch.randn(4, 8) for m in "abc"}
    present = {
        m: torch.tensor([True, True, False, True]) if m == "b" else torch.ones(4, dtype=torch.bool)
        for m in "abc"
    }
    out = f(feats, present)
    assert out.shape == (4, f.out_dim)
    # whatever row 2 of modality b holds, the output does not change
    feats2 = {**feats, "b": feats["b"].clone()}
    feats2["b"][2] = 1e6
    torch.testing.assert_close(f(feats2, present), out)
    # None means "no row missing" and equals an all-True mask
    full = {m: torch.ones(4, dtype=torch.bool) for m in "abc"}
    torch.testing.assert_close(f(feats, dict.fromkeys("abc")), f(feats, full))


def _task() -> TaskSpec:
    return TaskSpec((ModalitySpec("img", (1, 12, 12)), ModalitySpec("vec", (5,))), 3)


def test_missing_rows_never_reach_the_encoder() -> None:
    model = MultimodalModel(_task(), ModelConfig(width=8))
    seen = []
    model.encoders["img"].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    present = torch.tensor([True, False, True, False])
    batch = MultimodalBatch(
        {"img": torch.randn(4, 1, 12, 12), "vec": torch.randn(4, 5)},
        {"img": present, "vec": torch.ones(4, dtype=torch.bool)},
        torch.zeros(4, dtype=torch.long),
    )
    features, logits = model(batch)
    assert seen == [2], "the encoder saw rows of a missing modality"
    assert torch.all(features["img"][~present] == 0) and logits.shape == (4, 3)


def test_concat_slices_sum_to_the_fused_logits() -> None:
    model = MultimodalModel(_task(), ModelConfig(width=8)).eval()
    batch = MultimodalBatch(
        {"img": torch.randn(4, 1, 12, 12), "vec": torch.randn(4, 5)},
        {m: torch.ones(4, dtype=torch.bool) for m in ("img", "vec")},
        torch.zeros(4, dtype=torch.long),
    )
    with torch.no_grad():
        features, logits = model(batch)
        parts = model.modality_logits(features, batch.present)
    torch.testing.assert_close(parts["img"] + parts["vec"], logits)


def test_unknown_encoder_modality_in_config_is_named() -> None:
    with pytest.raises(ValueError, match=r"model.encoders names unknown modalities \['audio'\]"):
        MultimodalModel(_task(), ModelConfig(encoders={"audio": {"name": "cnn"}}))


# ---- engine options that pass through to Fabric and torch --------------------------------


def _quick(tmp_path: Path, *overrides: str):
    return unipair.train(load_config(None, [
        "dataset.name=handwritten", "train.epochs=2", "logging.progress=none",
        f"out={tmp_path}", "fabric.accelerator=cpu", *overrides,
    ]))  # fmt: skip


@pytest.mark.parametrize(
    ("precision", "method"),
    [("bf16-mixed", "ogm_ge"), ("bf16-true", "joint"), ("bf16-true", "mla")],
)
def test_bfloat16_precisions_train_on_cpu(tmp_path: Path, precision: str, method: str) -> None:
    result = _quick(tmp_path, f"fabric.precision={precision}", f"method.name={method}")
    assert result.summary["precision"] == precision and result.test["acc"] > 0.9


def test_tensorboard_logging_and_gradient_clipping(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    result = _quick(tmp_path, "logging.tensorboard=true", "optim.grad_clip=0.5",
                    "optim.schedule=cosine", "optim.warmup_epochs=1")  # fmt: skip
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents*"))
    assert result.test["acc"] > 0.9


@pytest.mark.gpu
def test_training_on_gpu_in_bf16(tmp_path: Path) -> None:
    result = unipair.train(load_config(None, [
        "dataset.name=handwritten", "train.epochs=2", "logging.progress=none",
        f"out={tmp_path}", "fabric.accelerator=gpu", "fabric.precision=bf16-mixed",
    ]))  # fmt: skip
    assert result.summary["device"].startswith("cuda") and result.test["acc"] > 0.9


# ---- variable-length sequences: padding never changes an output -------------------------------
@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    extra=st.integers(0, 6),
    pool=st.sampled_from(["mean", "none"]),
    tokens=st.booleans(),
)
def test_any_padding_length_leaves_encoder_outputs_unchanged(lengths, extra, pool, tokens) -> None:
    torch.manual_seed(0)
    longest = max(lengths)
    cap = longest + extra
    shape = (16,) if tokens else (16, 5)
    enc = create_encoder("tokens" if tokens else "transformer", shape, 8, pool=pool,
                         vocab=30 if tokens else None).eval()  # fmt: skip

    def batch(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(steps)  # padding values differ with the length
        size = (len(lengths), steps) if tokens else (len(lengths), steps, 5)
        x = torch.randint(0, 30, size, generator=g) if tokens else torch.randn(size, generator=g)
        valid = torch.arange(steps)[None] < torch.tensor(lengths)[:, None]
        real = torch.arange(longest)
        base = torch.Generator().manual_seed(99)
        same = (torch.randint(0, 30, (len(lengths), longest), generator=base) if tokens
                else torch.randn(len(lengths), longest, 5, generator=base))  # fmt: skip
        x[:, real] = same  # the real steps are identical in both batches
        return x, valid

    with torch.no_grad():
        (xa, va), (xb, vb) = batch(longest), batch(cap)
        a, b = enc(xa, va), enc(xb, vb)
    if pool == "none":
        a, b = a * va.unsqueeze(-1), (b * vb.unsqueeze(-1))[:, :longest]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_a_variable_length_modality_needs_an_encoder_that_reads_steps() -> None:
    from unipair.models.multimodal import ModelConfig, build_encoders

    task = TaskSpec(
        (ModalitySpec("seq", (20, 4), variable_length=True), ModalitySpec("v", (3,))), 2
    )
    model = ModelConfig.model_validate({"encoders": {"seq": {"name": "mlp"}}})
    with pytest.raises(ConfigError, match="modality 'seq' has variable length"):
        build_encoders(task, model)
    tokens = TaskSpec((ModalitySpec("text", (12,), True, vocab=50), ModalitySpec("v", (3,))), 2)
    assert type(build_encoders(tokens, ModelConfig())["text"]).__name__ == "TokenEncoder"
