"""The conformance kit: one named check per property, for every registered method, encoder,
fusion and dataset, in the spirit of scikit-learn's ``check_estimator``.

A user who registers a method runs the same suite in their own tests::

    from unipair.testing import parametrize_with_checks

    @parametrize_with_checks(["my_method"])
    def test_my_method(name, check):
        check(name)

Each check is a plain function ``check_<property>(name)`` that raises ``AssertionError`` with
the method's name and what is wrong; ``pytest -k check_state_dict_round_trip`` isolates one
property across all methods. Checks run on the ``synthetic`` dataset with 2 and 3 modalities
and small MLP encoders, so the whole suite for one method takes seconds; the DDP check (two
processes through the real engine) is marked ``slow``.
"""

from __future__ import annotations

import copy
import csv
import functools
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import MultimodalData
from unipair.data.missing import missing_masks
from unipair.errors import ConfigError, DataNotFoundError
from unipair.methods import Method, TrainStep
from unipair.methods.base import check_method_class, row_counts
from unipair.methods.registry import METHODS
from unipair.methods.registry import create as create_method

__all__ = [
    "check_accumulation_matches_one_batch",
    "check_dataset_batches_match_samples",
    "check_dataset_is_reproducible",
    "check_dataset_splits_are_disjoint",
    "check_ddp_matches_one_process",
    "check_encoder_ignores_padding",
    "check_encoder_output_shape",
    "check_encoder_rows_are_independent_in_eval",
    "check_fusion_ignores_missing_rows",
    "check_fusion_output_shape",
    "check_hparams_are_typed_and_strict",
    "check_logs_are_detached_finite_scalars",
    "check_missing_modalities",
    "check_modality_features",
    "check_param_groups_cover_every_parameter",
    "check_predictions_have_declared_shapes",
    "check_registration",
    "check_seeded_determinism",
    "check_state_dict_round_trip",
    "check_training_changes_parameters",
    "check_trains_through_the_engine",
    "kit_model",
    "parametrize_with_checks",
    "yield_dataset_checks",
    "yield_encoder_checks",
    "yield_fusion_checks",
    "yield_method_checks",
]

Check = Callable[[str], None]

#: small encoders without dropout, so that the checks are fast and exact
KIT_MODEL: dict[str, Any] = {
    "width": 16,
    "encoders": {"*": {"name": "mlp", "options": {"hidden": [32], "dropout": 0.0}}},
}
MODALITY_COUNTS = (2, 3)
BATCH = 32


def kit_model() -> dict[str, Any]:
    """The model config every method check uses (a copy)."""
    return copy.deepcopy(KIT_MODEL)


@functools.cache
def _data(modalities: int) -> MultimodalData:
    from unipair.data.synthetic import load_synthetic

    return load_synthetic(modalities, num_samples=240, num_classes=3, seed=1)


def _batches(data: MultimodalData, n: int = 3, size: int = BATCH) -> list[MultimodalBatch]:
    return [data.train.__getitems__(list(range(i * size, (i + 1) * size))) for i in range(n)]


def _build(
    name: str, data: MultimodalData, seed: int = 0, hparams: dict[str, Any] | None = None
) -> tuple[Method, TrainStep]:
    from unipair.engine.config import OptimConfig
    from unipair.engine.optim import build_optimizer, check_parameter_groups

    torch.manual_seed(seed)
    method = create_method(name, data.spec, kit_model(), hparams)
    _attach_untrained_auxiliary(method, data)
    groups = method.parameter_groups()
    check_parameter_groups(method, groups)
    return method, TrainStep.local(method, build_optimizer(groups, OptimConfig(lr=1e-2)))


def _attach_untrained_auxiliary(method: Method, data: MultimodalData) -> None:
    """In-process checks give a method's declared auxiliary runs as fresh frozen models (the
    same weights in every build), so they exercise the contract without finished runs."""
    needs = method.auxiliary_runs()
    if not needs:
        return
    models = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        for key, spec in needs.items():
            aux = create_method(spec.method, data.spec, kit_model(), dict(spec.hparams))
            models[key] = aux.requires_grad_(False).eval()
    method.attach_auxiliary(models)


def _train(method: Method, step: TrainStep, batches: Sequence[MultimodalBatch]) -> list[dict]:
    torch.manual_seed(123)
    method.train()
    logs = []
    for b in batches:
        logs.append(method.training_step(b, step))
        step.global_step += 1
    return logs


def _predict(method: Method, batch: MultimodalBatch):
    method.eval()
    with torch.no_grad():
        out = method.predict(batch)
    method.train()
    return out


def _identical(a: Tensor, b: Tensor) -> bool:
    """Equal values, NaN equal to NaN (a buffer may start as NaN)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def _each_task() -> Iterator[tuple[str, MultimodalData]]:
    for k in MODALITY_COUNTS:
        yield f"{k} modalities", _data(k)


# ---------------------------------------------------------------------------- method checks
def check_registration(name: str) -> None:
    """The class implements every abstract hook and declares Hparams, description, tags."""
    cls = METHODS.get(name)
    check_method_class(cls, name)
    assert cls.name == name, f"{name}: registered class says its name is {cls.name!r}"


def check_hparams_are_typed_and_strict(name: str) -> None:
    """Defaults validate, dump and reload to equal values; an unknown key is named."""
    cls = METHODS.get(name)
    hp = cls.Hparams()
    again = cls.Hparams.model_validate(hp.model_dump(mode="json"))
    assert again == hp, f"{name}: hyperparameters do not round-trip through JSON"
    try:
        create_method(name, _data(2).spec, kit_model(), {"no_such_option": 1})
    except ConfigError as e:
        assert "no_such_option" in str(e), f"{name}: the error does not name the key: {e}"
    else:
        raise AssertionError(f"{name}: an unknown hyperparameter was accepted")


def check_param_groups_cover_every_parameter(name: str) -> None:
    """Every trainable parameter is in exactly one optimizer group; names are unique."""
    from unipair.engine.optim import check_parameter_groups

    for what, data in _each_task():
        method = create_method(name, data.spec, kit_model())
        try:
            check_parameter_groups(method, method.parameter_groups())
        except ValueError as e:
            raise AssertionError(f"{name} ({what}): {e}") from None


def check_logs_are_detached_finite_scalars(name: str) -> None:
    """``training_step`` returns detached finite 0-d tensors, including ``loss``."""
    for what, data in _each_task():
        method, step = _build(name, data)
        for entry in _train(method, step, _batches(data)):
            assert "loss" in entry, f"{name} ({what}) must log 'loss'"
            for k, v in entry.items():
                assert isinstance(v, Tensor) and v.dim() == 0, f"{name}: log {k!r} is no scalar"
                assert not v.requires_grad, f"{name}: log {k!r} is attached to the graph"
                assert torch.isfinite(v), f"{name} ({what}): log {k!r} is {float(v)}"


def check_training_changes_parameters(name: str) -> None:
    """A few training steps change at least one floating-point parameter or buffer."""
    for what, data in _each_task():
        method, step = _build(name, data)
        before = copy.deepcopy(method.state_dict())
        _train(method, step, _batches(data))
        after = method.state_dict()
        changed = [
            k
            for k in after
            if after[k].is_floating_point() and not torch.equal(after[k], before[k])
        ]
        assert changed, f"{name} ({what}): training changed no parameter"


def check_predictions_have_declared_shapes(name: str) -> None:
    """Fused logits [B, C]; per-modality logits [B, C] for known modalities; ``per_sample``
    values [B]; ``arrays`` with a leading batch dimension; all finite."""
    for what, data in _each_task():
        method, step = _build(name, data)
        batch = _batches(data, 1)[0]
        _train(method, step, [batch])
        pred = _predict(method, batch)
        c, b = data.spec.num_classes, len(batch)
        assert pred.logits.shape == (b, c), f"{name}: logits {tuple(pred.logits.shape)}"
        assert torch.isfinite(pred.logits).all(), f"{name} ({what}): non-finite logits"
        assert pred.modality_logits, f"{name}: no per-modality logits"
        for m, z in pred.modality_logits.items():
            assert m in data.spec.names, f"{name}: logits for unknown modality {m!r}"
            assert z.shape == (b, c) and torch.isfinite(z).all(), f"{name}: {m} logits"
        for k, v in pred.per_sample.items():
            assert v.shape == (b,), f"{name}: per_sample {k!r} has shape {tuple(v.shape)}"
        for k, v in pred.arrays.items():
            assert v.shape[0] == b, f"{name}: array {k!r} has no batch dimension"


def check_modality_features(name: str) -> None:
    """``modality_features`` gives every modality a [B, d] representation (what probes read),
    finite, zero where the modality is missing; ``shared_embeddings``, when given, has one
    width for all modalities."""
    for what, data in _each_task():
        method, step = _build(name, data)
        batch = _batches(data, 1)[0]
        _train(method, step, [batch])
        hidden = data.spec.names[-1]
        partial = batch.with_missing({hidden: torch.arange(len(batch)) % 2 == 0})
        method.eval()
        with torch.no_grad():
            try:
                feats = method.modality_features(partial)
            except NotImplementedError as e:
                raise AssertionError(f"{name}: implement modality_features ({e})") from None
            shared = method.shared_embeddings(partial)
        method.train()
        assert set(feats) <= set(data.spec.names) and feats, f"{name}: features for {set(feats)}"
        for m, x in feats.items():
            assert x.dim() == 2 and x.shape[0] == len(batch), f"{name}: {m} {tuple(x.shape)}"
            assert torch.isfinite(x).all(), f"{name} ({what}): {m} features not finite"
        if hidden in feats:
            gone = ~partial.present[hidden]
            assert float(feats[hidden][gone].abs().sum()) == 0.0, f"{name}: missing rows not 0"
        if shared is not None:
            widths = {x.shape[-1] for x in shared.values()}
            assert len(widths) == 1, f"{name}: shared embeddings of widths {widths}"


def check_state_dict_round_trip(name: str) -> None:
    """A fresh instance loading the state dict predicts exactly the same."""
    for what, data in _each_task():
        method, step = _build(name, data)
        batches = _batches(data)
        _train(method, step, batches)
        clone, _ = _build(name, data, seed=99)
        clone.load_state_dict(method.state_dict())
        a, b = _predict(method, batches[0]), _predict(clone, batches[0])
        torch.testing.assert_close(b.logits, a.logits, msg=f"{name} ({what})")


def check_seeded_determinism(name: str) -> None:
    """Two runs from one seed end with identical state."""
    for what, data in _each_task():
        batches = _batches(data)
        m1, s1 = _build(name, data, seed=5)
        m2, s2 = _build(name, data, seed=5)
        _train(m1, s1, batches)
        _train(m2, s2, batches)
        for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
            assert _identical(a, b), f"{name} ({what}): {k} differs between two seeded runs"


def check_missing_modalities(name: str) -> None:
    """Training and prediction accept rows with modalities missing, and a modality missing
    from a whole batch; the outputs for present modalities stay finite."""
    for what, data in _each_task():
        method, step = _build(name, data)
        batch = _batches(data, 1, 48)[0]
        partial = batch.with_missing(missing_masks(len(batch), data.spec.names, 0.5, seed=0))
        last = data.spec.names[-1]
        whole = batch.with_missing({last: torch.ones(len(batch), dtype=torch.bool)})
        for b in (partial, whole):
            logs = method.training_step(b, step)
            assert torch.isfinite(logs["loss"]), f"{name} ({what}): loss not finite"
            pred = _predict(method, b)
            assert torch.isfinite(pred.logits).all(), f"{name} ({what}): fused logits"
            for m, z in pred.modality_logits.items():
                rows = b.present[m]
                assert torch.isfinite(z[rows]).all(), f"{name} ({what}): {m} logits"


def check_accumulation_matches_one_batch(name: str) -> None:
    """For methods that allow it: two accumulated micro-batches (with the global row counts
    the engine gives) take the same optimizer step as one batch of both, within float error.
    Methods that do not allow it must say why."""
    no_dropout = dict.fromkeys(METHODS.get(name).tags.dropout_keys, 0.0)
    for what, data in _each_task():
        one, s_one = _build(name, data, seed=3, hparams=no_dropout)
        if (why := one.accumulation_problem()) is not None:
            assert why.strip(), f"{name}: accumulation refused without a reason"
            return
        two, s_two = _build(name, data, seed=3, hparams=no_dropout)
        batch = _batches(data, 1, 40)[0]
        batch = batch.with_missing(missing_masks(len(batch), data.spec.names, 0.3, seed=1))
        torch.manual_seed(7)
        one.training_step(batch, s_one)
        counts = row_counts([batch])
        s_two.counts = {k: torch.tensor(v) for k, v in counts.items()}
        s_two.micro_batches = 2
        torch.manual_seed(7)
        for i, rows in enumerate(torch.arange(len(batch)).tensor_split(2)):
            s_two.micro_batch = i
            two.training_step(batch.subset(rows), s_two)
        for (k, a), b in zip(one.state_dict().items(), two.state_dict().values(), strict=True):
            if a.is_floating_point():
                torch.testing.assert_close(
                    b, a, rtol=1e-4, atol=1e-5, equal_nan=True, msg=f"{name} ({what}): {k}"
                )


def _engine_config(method: str, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """A small run of ``method`` on 3-modality synthetic data; ``overrides``: dotted keys."""
    cls = METHODS.get(method)
    hparams = dict.fromkeys(cls.tags.dropout_keys, 0.0)
    cfg: dict[str, Any] = {
        "dataset": {
            "name": "synthetic",
            "options": {"modalities": 3, "num_samples": 240, "num_classes": 3, "seed": 1},
        },
        "method": {"name": method, "hparams": hparams},
        "model": kit_model(),
        "optim": {"lr": 3e-3},
        "train": {"epochs": 2, "batch_size": 32},
        "fabric": {"accelerator": "cpu"},
        "logging": {"progress": "none"},
        "out": str(out),
    }
    for dotted, value in overrides.items():
        node = cfg
        *path, last = dotted.split(".")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return cfg


def _train_auxiliary(name: str, out: Path, seed: int = 0) -> dict[str, str]:
    """Train every auxiliary run the method declares (1 epoch) and map key -> run dir."""
    from unipair.engine.trainer import train

    method = create_method(name, _data(3).spec, kit_model())
    dirs = {}
    for key, spec in method.auxiliary_runs().items():
        cfg = _engine_config(spec.method, out, {"train.epochs": 1, "train.seed": seed})
        cfg["method"] = {"name": spec.method, "hparams": dict(spec.hparams)}
        cfg["name"] = "aux-" + key.replace("/", "-")
        dirs[key] = str(train(cfg).run_dir)
    return dirs


def check_trains_through_the_engine(name: str) -> None:
    """Two epochs through the real Trainer (hooks, held-out part, auxiliary runs, validation,
    selection, checkpoint, test once) give a finished run with finite metrics."""
    from unipair.engine.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        aux = _train_auxiliary(name, Path(tmp))
        cfg = _engine_config(name, Path(tmp), {"name": "run"})
        cfg["method"]["aux"] = aux
        result = train(cfg)
        assert len(result.history) == 2, f"{name}: {len(result.history)} epochs recorded"
        assert math.isfinite(result.test["acc"]), f"{name}: test accuracy {result.test['acc']}"
        for row in result.history:
            assert math.isfinite(row["train/loss"]), f"{name}: train/loss {row['train/loss']}"


def _metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_ddp_matches_one_process(name: str) -> None:
    """Two processes (gloo, forked) give one process's metrics at the same global batch, with
    an odd batch size so the processes' shares are uneven. Losses within 1e-4, accuracies
    within one sample."""
    from unipair.engine.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        aux = _train_auxiliary(name, Path(tmp))
        runs = {}
        for label, devices, strategy in (("one", 1, "auto"), ("two", 2, "ddp_fork")):
            cfg = _engine_config(
                name,
                Path(tmp),
                {
                    "name": label,
                    "train.batch_size": 37,
                    "fabric.devices": devices,
                    "fabric.strategy": strategy,
                },
            )
            cfg["method"]["aux"] = aux
            train(cfg)
            runs[label] = _metrics(Path(tmp) / label / "metrics.csv")
        n_val = len(_data(3).val)
        for a, b in zip(runs["one"], runs["two"], strict=True):
            for key in ("train/loss", "val/loss"):
                assert math.isclose(float(a[key]), float(b[key]), abs_tol=1e-4), (
                    f"{name}: epoch {a['epoch']} {key}: one process {a[key]}, two {b[key]}"
                )
            for key in (k for k in a if k.startswith("val/acc")):
                diff = abs(float(a[key]) - float(b[key]))
                assert diff <= 1 / n_val + 1e-9, f"{name}: {key} {a[key]} vs {b[key]}"


def yield_method_checks(name: str) -> Iterator[Check]:
    """The checks that apply to a method (its tags decide about accumulation and DDP)."""
    tags = METHODS.get(name).tags
    yield check_registration
    yield check_hparams_are_typed_and_strict
    yield check_param_groups_cover_every_parameter
    yield check_logs_are_detached_finite_scalars
    yield check_training_changes_parameters
    yield check_predictions_have_declared_shapes
    yield check_modality_features
    yield check_state_dict_round_trip
    yield check_seeded_determinism
    yield check_missing_modalities
    yield check_accumulation_matches_one_batch
    yield check_trains_through_the_engine
    if tags.ddp_exact:
        yield check_ddp_matches_one_process


# ---------------------------------------------------------------------------- encoder checks
def _encoder(name: str, seed: int = 0):
    from unipair.models.encoders import ENCODERS, create_encoder

    cls = ENCODERS.get(name)
    shape = getattr(cls, "example_input_shape", None)
    assert shape is not None, f"encoder {name!r} declares no example_input_shape"
    vocab = getattr(cls, "example_vocab", None)
    torch.manual_seed(seed)
    return create_encoder(name, shape, 16, vocab=vocab), tuple(shape), vocab


def _example_input(shape: tuple[int, ...], vocab: int | None, rows: int) -> Tensor:
    if vocab is not None:  # token ids
        return torch.randint(0, vocab, (rows, *shape))
    return torch.randn(rows, *shape)


def check_encoder_output_shape(name: str) -> None:
    """[B, *example_input_shape] -> [B, out_dim] (or [B, L, out_dim] for sequence output),
    finite, and every parameter receives a gradient."""
    enc, shape, vocab = _encoder(name)
    x = _example_input(shape, vocab, 4)
    out = enc(x)
    want = (4, enc.out_dim) if not enc.sequence_output else (4, out.shape[1], enc.out_dim)
    assert tuple(out.shape) == want, f"encoder {name}: output {tuple(out.shape)}, want {want}"
    assert torch.isfinite(out).all(), f"encoder {name}: non-finite output"
    out.float().pow(2).mean().backward()
    dead = [n for n, p in enc.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, f"encoder {name}: no gradient reaches {dead[:3]}"


def check_encoder_rows_are_independent_in_eval(name: str) -> None:
    """In eval mode a row's output does not depend on the other rows of its batch."""
    enc, shape, vocab = _encoder(name)
    enc.eval()
    x = _example_input(shape, vocab, 5)
    with torch.no_grad():
        full, alone = enc(x), enc(x[:1])
    torch.testing.assert_close(alone, full[:1], rtol=1e-4, atol=1e-5, msg=f"encoder {name}")


def check_encoder_ignores_padding(name: str) -> None:
    """For encoders that read padded sequences: padding steps (any values, any amount) leave
    the output of every real step, and the pooled output, unchanged."""
    enc, shape, vocab = _encoder(name)
    enc.eval()
    length = shape[0]
    x = _example_input(shape, vocab, 3)
    valid = torch.zeros(3, length, dtype=torch.bool)
    for row, n in enumerate((length, length // 2, 1)):
        valid[row, :n] = True
    junk = _example_input(shape, vocab, 3)
    padded = torch.where(valid.view(3, length, *[1] * (x.dim() - 2)), x, junk)
    with torch.no_grad():
        a, b = enc(x, valid), enc(padded, valid)
        short = enc(x[:, : length // 2 + 1], valid[:, : length // 2 + 1])
    if enc.sequence_output:
        keep = valid.unsqueeze(-1)
        a, b = a * keep, b * keep
        short = torch.nn.functional.pad(short, (0, 0, 0, a.shape[1] - short.shape[1]))
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=f"encoder {name}: pad values")
    rows = slice(1, 3)  # the rows whose real steps fit in the shorter batch
    torch.testing.assert_close(short[rows], a[rows], rtol=1e-5, atol=1e-5, msg=f"{name}: length")


def yield_encoder_checks(name: str) -> Iterator[Check]:
    from unipair.models.encoders import ENCODERS

    yield check_encoder_output_shape
    yield check_encoder_rows_are_independent_in_eval
    if getattr(ENCODERS.get(name), "reads_steps", False):
        yield check_encoder_ignores_padding


# ---------------------------------------------------------------------------- fusion checks
def _fusion(name: str):
    from unipair.models.fusion import create_fusion

    torch.manual_seed(0)
    mods = ["a", "b", "c"]
    fusion = create_fusion(name, mods, 8)
    feats = {m: torch.randn(6, 8) for m in mods}
    return fusion, mods, feats


def check_fusion_output_shape(name: str) -> None:
    """[B, out_dim], finite, with and without missing rows."""
    fusion, mods, feats = _fusion(name)
    present = {m: None for m in mods}
    out = fusion(feats, present)
    assert out.shape == (6, fusion.out_dim), f"fusion {name}: output {tuple(out.shape)}"
    partial = {m: torch.tensor([True, False, True, True, False, True]) for m in mods}
    assert torch.isfinite(fusion(feats, partial)).all(), f"fusion {name}: non-finite output"


def check_fusion_ignores_missing_rows(name: str) -> None:
    """Changing the features of a missing modality in a row never changes that row's output."""
    fusion, mods, feats = _fusion(name)
    present = {m: torch.ones(6, dtype=torch.bool) for m in mods}
    present["b"] = torch.tensor([True, False, True, False, False, True])
    altered = dict(feats, b=feats["b"] + 100 * torch.randn(6, 8))
    missing = ~present["b"]
    with torch.no_grad():
        a, b = fusion(feats, present), fusion(altered, present)
    torch.testing.assert_close(b[missing], a[missing], msg=f"fusion {name}")


def yield_fusion_checks(name: str) -> Iterator[Check]:
    yield check_fusion_output_shape
    yield check_fusion_ignores_missing_rows


# ---------------------------------------------------------------------------- dataset checks
def _dataset(name: str, **options: Any) -> MultimodalData:
    import pytest

    from unipair.data.registry import create

    try:
        return create(name, **options)
    except DataNotFoundError as e:
        pytest.skip(f"dataset {name!r} is not available here: {e}")


def check_dataset_splits_are_disjoint(name: str) -> None:
    """Train, val and test share no sample; labels lie in 0..C-1; every class is in train."""
    data = _dataset(name)
    seen: dict[int, str] = {}
    for split in ("train", "val", "test"):
        ds = data.split(split)
        for i in ds.fetch(torch.arange(len(ds))).index.tolist():
            assert i not in seen, f"dataset {name}: sample {i} is in {seen[i]} and {split}"
            seen[i] = split
        labels = ds.labels
        assert int(labels.min()) >= 0 and int(labels.max()) < data.spec.num_classes, split
    counts = data.train.class_counts(data.spec.num_classes)
    assert min(counts) > 0, f"dataset {name}: a class has no training sample: {counts}"


def check_dataset_batches_match_samples(name: str) -> None:
    """``__getitems__`` equals stacking ``__getitem__`` and, dequantized, what a loader ships
    (``loader_batch``); shapes match the task spec."""
    data = _dataset(name)
    rows = [0, len(data.train) // 2, len(data.train) - 1]
    batch = data.train.__getitems__(rows)
    shipped = data.train.loader_batch(rows).dequantize()
    for m in data.spec.modalities:
        assert tuple(batch.inputs[m.name].shape[1:]) == m.shape, f"dataset {name}: {m.name}"
        assert torch.equal(shipped.inputs[m.name], batch.inputs[m.name]), (
            f"dataset {name}: {m.name} differs between loader_batch and __getitems__"
        )
    for j, i in enumerate(rows):
        sample = data.train[i]
        assert sample.label == int(batch.labels[j]), f"dataset {name}: label of row {i}"
        for m, x in sample.inputs.items():
            torch.testing.assert_close(x, batch.inputs[m][j], msg=f"dataset {name}: {m} row {i}")


def check_dataset_is_reproducible(name: str) -> None:
    """Two loads give the same fingerprint and the same rows."""
    a, b = _dataset(name), _dataset(name)
    assert a.fingerprint == b.fingerprint, f"dataset {name}: fingerprints differ"
    assert torch.equal(a.test.labels, b.test.labels), f"dataset {name}: test labels differ"


def yield_dataset_checks(name: str) -> Iterator[Check]:
    yield check_dataset_splits_are_disjoint
    yield check_dataset_batches_match_samples
    yield check_dataset_is_reproducible


# ---------------------------------------------------------------------------- pytest helper
_SLOW = {"check_ddp_matches_one_process"}


def parametrize_with_checks(names: Sequence[str], kind: str = "method"):
    """``pytest.mark.parametrize("name,check", ...)`` over every applicable check of every
    name; test ids are ``<name>-<check>``. ``kind``: method, encoder, fusion or dataset."""
    import pytest

    producers = {
        "method": yield_method_checks,
        "encoder": yield_encoder_checks,
        "fusion": yield_fusion_checks,
        "dataset": yield_dataset_checks,
    }
    if kind not in producers:
        raise ValueError(f"kind must be one of {sorted(producers)}, got {kind!r}")
    params = []
    for n in names:
        for check in producers[kind](n):
            marks = [pytest.mark.slow] if check.__name__ in _SLOW else []
            params.append(pytest.param(n, check, id=f"{n}-{check.__name__}", marks=marks))
    return pytest.mark.parametrize("name,check", params)
