"""The conformance test every registered method must pass (cf. scikit-learn's check_estimator).

On synthetic data with 2 and 3 modalities: parameter groups cover every parameter once, the loss
is finite, parameters change, predictions have the right shapes, the state dict round-trips,
training is deterministic under a seed, and missing modalities are accepted.
"""

from __future__ import annotations

import copy

import pytest
import torch

from unipair import methods
from unipair.data.batch import MultimodalBatch
from unipair.data.missing import missing_masks
from unipair.data.synthetic import load_synthetic
from unipair.engine.config import OptimConfig
from unipair.engine.optim import build_optimizer, check_parameter_groups

MODEL = {"width": 16, "encoders": {"*": {"options": {"hidden": [32]}}}}


@pytest.fixture(scope="module", params=[2, 3], ids=["2mod", "3mod"])
def data(request: pytest.FixtureRequest):
    return load_synthetic(request.param, num_samples=240, num_classes=3, seed=1)


def _batches(data, n: int = 3, size: int = 32) -> list[MultimodalBatch]:
    return [data.train.__getitems__(list(range(i * size, (i + 1) * size))) for i in range(n)]


def _build(name: str, data, seed: int = 0):
    torch.manual_seed(seed)
    method = methods.create(name, data.spec, MODEL)
    groups = method.parameter_groups()
    check_parameter_groups(method, groups)
    opt = build_optimizer(groups, OptimConfig(lr=1e-2))
    return method, methods.TrainStep.local(method, opt)


def _train(method, step, batches) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(123)
    method.train()
    logs = []
    for epoch, b in enumerate(batches):
        method.on_train_epoch_start(epoch)
        logs.append(method.training_step(b, step))
        step.global_step += 1
    return logs


def _predict(method, batch):
    method.eval()
    with torch.no_grad():
        return method.predict(batch)


@pytest.mark.parametrize("name", methods.list_methods())
def test_method_conformance(name: str, data) -> None:
    batches = _batches(data)
    method, step = _build(name, data)
    before = copy.deepcopy(method.state_dict())
    logs = _train(method, step, batches)

    # loss finite and logged as detached scalars
    for entry in logs:
        assert "loss" in entry, f"{name} must log 'loss'"
        for k, v in entry.items():
            assert v.dim() == 0 and not v.requires_grad, f"{name}: log {k!r} is not a scalar"
            assert torch.isfinite(v), f"{name}: log {k!r} is not finite"

    # parameters change
    after = method.state_dict()
    changed = [
        k
        for k in after
        if after[k].dtype.is_floating_point and not torch.equal(after[k], before[k])
    ]
    assert changed, f"{name}: training changed no parameter"

    # predictions
    pred = _predict(method, batches[0])
    c = data.spec.num_classes
    assert pred.logits.shape == (32, c) and torch.isfinite(pred.logits).all()
    assert pred.modality_logits, f"{name}: no per-modality logits"
    for m, z in pred.modality_logits.items():
        assert m in data.spec.names and z.shape == (32, c) and torch.isfinite(z).all()
    for k, v in pred.extras.items():
        assert v.shape[0] == 32, f"{name}: extra {k!r} has no batch dimension"

    # state dict round-trips into a fresh instance
    clone, _ = _build(name, data, seed=99)
    clone.load_state_dict(method.state_dict())
    again = _predict(clone, batches[0])
    torch.testing.assert_close(again.logits, pred.logits)

    # deterministic under a seed
    m1, s1 = _build(name, data, seed=5)
    m2, s2 = _build(name, data, seed=5)
    _train(m1, s1, batches)
    _train(m2, s2, batches)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name}: {k} differs between two runs with one seed"


@pytest.mark.parametrize("name", methods.list_methods())
def test_method_accepts_missing_modalities(name: str, data) -> None:
    method, step = _build(name, data)
    batch = _batches(data, 1, 48)[0]
    masks = missing_masks(len(batch), data.spec.names, 0.5, seed=0)
    partial = batch.with_missing(masks)
    # and one modality absent from the whole batch
    whole = batch.with_missing({data.spec.names[-1]: torch.ones(len(batch), dtype=torch.bool)})
    for b in (partial, whole):
        logs = method.training_step(b, step)
        assert torch.isfinite(logs["loss"]), f"{name}: loss not finite with missing modalities"
        pred = _predict(method, b)
        method.train()
        assert torch.isfinite(pred.logits).all()
        for m, z in pred.modality_logits.items():
            rows = b.present[m]
            assert torch.isfinite(z[rows]).all(), f"{name}: {m} logits not finite"


@pytest.mark.parametrize("name", methods.list_methods())
def test_unknown_hyperparameter_is_named(name: str, data) -> None:
    with pytest.raises(ValueError, match="no_such_option"):
        methods.create(name, data.spec, MODEL, no_such_option=1)
