"""MLA: the OWM projector, head gradient modification, dynamic fusion, and a real-data run."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import unipair
from unipair import methods
from unipair.data.batch import MultimodalBatch
from unipair.data.missing import missing_masks
from unipair.data.synthetic import load_synthetic
from unipair.engine.config import ConfigError, load_config
from unipair.engine.predict import build_method, load_data
from unipair.evaluation.reports.mla import fusion_weight_summary
from unipair.methods.mla import MLA, fuse_logits, fusion_weights, owm_update

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODEL = {"width": 8, "encoders": {"*": {"options": {"hidden": [16], "dropout": 0.0}}}}


@pytest.fixture(scope="module")
def data():
    return load_synthetic(2, num_samples=160, num_classes=3, seed=3)


def _batch(data, n: int = 48) -> MultimodalBatch:
    return data.train.__getitems__(list(range(n)))


def _mla(data, **hparams) -> MLA:
    torch.manual_seed(0)
    method = methods.create("mla", data.spec, MODEL, **hparams)
    assert isinstance(method, MLA)
    return method


# ------------------------------------------------------------------ the projector


def _rls_reference(rs: np.ndarray, alpha: float) -> np.ndarray:
    """Independent float64 reference: the RLS recursion written out with numpy."""
    p = np.eye(rs.shape[1])
    for r in rs:
        r = r.reshape(-1, 1)
        k = p @ r
        p = p - (k @ k.T) / (alpha + (r.T @ k).item())
    return p


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 10.0])
def test_projector_update_matches_float64_reference(alpha: float) -> None:
    rng = np.random.default_rng(0)
    rs = rng.normal(size=(40, 9)) * rng.uniform(0.1, 5.0, size=(40, 1))
    p = torch.eye(9, dtype=torch.float64)
    for r in rs:
        p = owm_update(p, torch.from_numpy(r), alpha)
    ref = _rls_reference(rs, alpha)
    np.testing.assert_allclose(p.numpy(), ref, rtol=1e-9, atol=1e-11)
    # and the closed form it recurses to: P = (I + R^T R / alpha)^-1 (Sherman-Morrison)
    closed = np.linalg.inv(np.eye(9) + rs.T @ rs / alpha)
    np.testing.assert_allclose(p.numpy(), closed, rtol=1e-6, atol=1e-9)
    assert torch.equal(p, p.T)
    eig = torch.linalg.eigvalsh(p)
    assert eig.min() > 0 and eig.max() <= 1 + 1e-12


def test_projector_float32_storage_stays_close() -> None:
    rng = np.random.default_rng(1)
    rs = rng.normal(size=(200, 6))
    p32 = torch.eye(6, dtype=torch.float32)
    for r in rs:
        p32 = owm_update(p32, torch.from_numpy(r), 0.5)
    assert p32.dtype == torch.float32 and torch.equal(p32, p32.T)
    np.testing.assert_allclose(p32.double().numpy(), _rls_reference(rs, 0.5), atol=1e-5)


def test_method_projector_update_and_gradient_projection(data) -> None:
    method = _mla(data, alpha=0.3)
    assert method.projector.shape == (9, 9) and method.projector.dtype == torch.float64
    r = torch.randn(8, dtype=torch.float64)
    method.update_projector(r)
    expected = _rls_reference(np.concatenate([r.numpy(), [1.0]])[None], 0.3)
    np.testing.assert_allclose(method.projector.numpy(), expected, rtol=1e-12)
    # G <- [G, g_b] P on the (linear) head, bias as the weight of a constant-1 input
    layer = method.hgm_layer
    layer.weight.grad = torch.randn_like(layer.weight)
    layer.bias.grad = torch.randn_like(layer.bias)
    full = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1).double() @ torch.from_numpy(
        expected
    )
    method.project_head_gradient()
    torch.testing.assert_close(layer.weight.grad, full[:, :-1].float())
    torch.testing.assert_close(layer.bias.grad, full[:, -1].float())
    # 'free' bias: d x d projector, bias gradient untouched
    free = _mla(data, hgm_bias="free")
    assert free.projector.shape == (8, 8)
    free.hgm_layer.bias.grad = g_b = torch.randn(3)
    free.hgm_layer.weight.grad = torch.randn(3, 8)
    free.update_projector(r)
    free.project_head_gradient()
    assert torch.equal(free.hgm_layer.bias.grad, g_b)


def test_projector_stays_float64_through_module_casts(data) -> None:
    method = _mla(data)
    method.update_projector(torch.randn(8))
    before = method.projector.clone()
    method.to(torch.bfloat16)
    assert method.head.weight.dtype == torch.bfloat16
    assert method.projector.dtype == torch.float64 and torch.equal(method.projector, before)


def test_mlp_head_projects_its_first_layer(data) -> None:
    torch.manual_seed(0)
    method = methods.create("mla", data.spec, {**MODEL, "head": "mlp", "head_hidden": 12})
    assert method.hgm_layer is method.head[0] and method.hgm_layer.in_features == 8


def test_reset_projector_each_epoch(data) -> None:
    def start_epoch(m) -> None:
        step = methods.TrainStep.local(m, torch.optim.SGD(m.parameters(), lr=0.1))
        m.on_train_epoch_start(step, methods.EpochData(m, probe=list))

    method = _mla(data, reset_projector=True)
    method.update_projector(torch.ones(8))
    start_epoch(method)
    assert torch.equal(method.projector, torch.eye(9, dtype=torch.float64))
    kept = _mla(data)
    kept.update_projector(torch.ones(8))
    start_epoch(kept)
    assert not torch.equal(kept.projector, torch.eye(9, dtype=torch.float64))


# ------------------------------------------------------------------ HGM preserves old outputs


def _head_shift_on_a(data, hgm: str, b_visits: int = 5) -> tuple[float, float]:
    """Visit A alone; record g at the mean feature r_A that visit trained on; visit B alone;
    return how far g(r_A) moved, and how far g moved at B's own mean feature."""
    method = _mla(data, hgm=hgm, alpha=1e-4)
    opt = torch.optim.SGD(method.parameters(), lr=0.5)  # plain SGD: the update is -lr G P
    step = methods.TrainStep.local(method, opt)
    batch = _batch(data)
    a, b = data.spec.names
    only_a = batch.with_missing({b: torch.ones(len(batch), dtype=torch.bool)})
    only_b = batch.with_missing({a: torch.ones(len(batch), dtype=torch.bool)})
    seen: list[torch.Tensor] = []
    update = method.update_projector
    method.update_projector = lambda r, step=None: (seen.append(r.detach().clone()), update(r))[1]
    method.train()
    with torch.no_grad():  # no dropout or BatchNorm: the same features as the visit's forward
        r_a = method.encode(only_a, a).mean(0)
    method.training_step(only_a, step)  # visits A only (B has no present row: skipped)
    if hgm == "owm":
        torch.testing.assert_close(seen[0].float(), r_a)  # the r the projector received
    with torch.no_grad():
        before = method.head(r_a)
        enc_a = [p.clone() for p in method.encoders[a].parameters()]
        r_b = method.encode(only_b, b).mean(0)
        before_b = method.head(r_b)
    for _ in range(b_visits):
        method.training_step(only_b, step)
    with torch.no_grad():
        after = method.head(r_a)
        moved_b = (method.head(r_b) - before_b).norm()
    for p, q in zip(method.encoders[a].parameters(), enc_a, strict=True):
        assert torch.equal(p, q), "B's visits must not touch A's encoder"
    return float((after - before).norm()), float(moved_b)


def test_hgm_keeps_head_outputs_on_earlier_modality(data) -> None:
    shift_owm, learned_owm = _head_shift_on_a(data, "owm")
    shift_off, learned_off = _head_shift_on_a(data, "off")
    assert shift_off > 0.1, "without HGM, B's visits should move the head's output on A"
    assert shift_owm < 1e-2 * shift_off, (shift_owm, shift_off)
    assert learned_owm > 0.2 * learned_off > 0, "HGM must still let the head learn B"


def test_reference_alpha_schedule(data) -> None:
    method = _mla(data, alpha=2.0, alpha_schedule="reference")
    step = methods.TrainStep.local(method, torch.optim.SGD(method.parameters(), lr=0.1))
    step.batch, step.batches = 0, 10
    assert method.current_alpha(step) == pytest.approx(0.2)
    step.batch = 5
    assert method.current_alpha(step) == pytest.approx(2.0 * 0.1**1.5)
    assert _mla(data, alpha=2.0).current_alpha(step) == 2.0


@pytest.mark.parametrize("order", ["project_then_update", "update_then_project"])
def test_update_order_decides_whether_the_first_visit_is_protected(data, order) -> None:
    """The reference order adds the visit's own mean feature to P before projecting, so even
    the first step leaves the head's output at that feature (almost) unchanged; OWM's order
    projects with P from earlier visits only (the identity at first), so the head learns it."""
    method = _mla(data, alpha=1e-6, hgm_order=order)
    step = methods.TrainStep.local(method, torch.optim.SGD(method.parameters(), lr=0.5))
    batch = _batch(data)
    a, b = data.spec.names
    only_a = batch.with_missing({b: torch.ones(len(batch), dtype=torch.bool)})
    method.train()
    with torch.no_grad():
        r_a = method.encode(only_a, a).mean(0)
        before = method.head(r_a)
    method.training_step(only_a, step)
    with torch.no_grad():
        moved = float((method.head(r_a) - before).norm())
    if order == "update_then_project":
        assert moved < 1e-4
    else:
        assert moved > 0.05


def test_engine_reports_the_position_in_the_epoch(tmp_path, monkeypatch) -> None:
    seen: list[tuple[int, int]] = []
    original = MLA.current_alpha

    def record(self, step=None):
        seen.append((step.batch, step.batches))
        return original(self, step)

    monkeypatch.setattr(MLA, "current_alpha", record)
    cfg = load_config(
        CONFIGS / "handwritten.yaml",
        [
            "method.name=mla",
            "method.hparams={alpha_schedule: reference}",
            "train.epochs=1",
            "train.batch_size=500",
            "train.test=false",
            f"out={tmp_path}",
            "logging.progress=none",
        ],
    )
    unipair.train(cfg)
    batches = sorted({b for _, b in seen})
    assert len(batches) == 1 and batches[0] > 1
    assert sorted({i for i, _ in seen}) == list(range(batches[0]))


# ------------------------------------------------------------------ training-step mechanics


class _Recorder(methods.TrainStep):
    """TrainStep that records which modality each forward visited and fakes the all-reduce."""

    def __init__(self, method, optimizer, global_count: float | None = None) -> None:
        fake, world = None, 1
        if global_count is not None:
            world = 2

            def fake(t: torch.Tensor) -> torch.Tensor:  # the other replica holds present rows
                return torch.full_like(t, global_count / world) if t.dim() == 0 else t

        super().__init__(method, optimizer, all_reduce=fake, world_size=world)
        self.visits: list[str] = []

    def forward(self, *args, **kwargs):
        self.visits.append(kwargs["modality"])
        return super().forward(*args, **kwargs)


def test_visit_order_fixed_and_shuffled(data) -> None:
    three = load_synthetic(3, num_samples=90, num_classes=3, seed=0)
    fixed = _mla(three)
    step = _Recorder(fixed, torch.optim.SGD(fixed.parameters(), lr=0.01))
    fixed.training_step(_batch(three, 16), step)
    assert step.visits == three.spec.names
    shuffled = _mla(three, order="shuffle")
    step = _Recorder(shuffled, torch.optim.SGD(shuffled.parameters(), lr=0.01))
    orders = set()
    for i in range(12):
        step.visits.clear()
        step.global_step = i
        shuffled.training_step(_batch(three, 16), step)
        assert sorted(step.visits) == sorted(three.spec.names)
        orders.add(tuple(step.visits))
    assert len(orders) > 1
    # the order depends on (seed, step) only, not on the global RNG
    step.global_step = 3
    assert shuffled.visit_order(step) == shuffled.visit_order(step)


def test_replica_without_present_rows_still_visits(data) -> None:
    """Under DDP a process with no present row of m still makes m's visit (zero-weight loss)."""
    method = _mla(data)
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    a, b = data.spec.names
    batch = _batch(data, 16).with_missing({b: torch.ones(16, dtype=torch.bool)})
    step = _Recorder(method, opt, global_count=8.0)
    enc_b = [p.clone() for p in method.encoders[b].parameters()]
    logs = method.training_step(batch, step)
    assert step.visits == [a, b]
    assert float(logs[f"loss/{b}"]) == 0.0
    for p, q in zip(method.encoders[b].parameters(), enc_b, strict=True):
        assert torch.equal(p, q)
    # a single process with no present row skips the visit
    step = _Recorder(method, opt)
    method.training_step(batch, step)
    assert step.visits == [a]


class _Replicas:
    """Two DDP replicas simulated with threads: all-reduce means through a barrier, and the
    backward averages gradients as DDP does (a parameter unused on a replica counts as 0)."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=20)
        self.slots: list[torch.Tensor | None] = [None, None]

    def all_reduce(self, rank: int, t: torch.Tensor) -> torch.Tensor:
        self.slots[rank] = t.detach().clone()
        self.barrier.wait()
        out = (self.slots[0] + self.slots[1]) / 2
        self.barrier.wait()
        return out

    def step(self, rank: int, method: MLA, lr: float) -> methods.TrainStep:
        def backward(loss: torch.Tensor) -> None:
            loss.backward()
            params = list(method.parameters())
            used = torch.tensor([float(p.grad is not None) for p in params])
            flat = torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p in params
                ]
            )
            used, flat = self.all_reduce(rank, used), self.all_reduce(rank, flat)
            for p, u, g in zip(params, used, flat.split([p.numel() for p in params]), strict=True):
                if u > 0:
                    p.grad = g.view_as(p).clone()

        opt = torch.optim.SGD(method.parameters(), lr=lr)
        return methods.TrainStep(
            method,
            opt,
            backward=backward,
            all_reduce=lambda t: self.all_reduce(rank, t),
            world_size=2,
        )


def test_two_ddp_replicas_match_one_process(data) -> None:
    """Half a batch on each of two replicas gives the one-process update and the same P, even
    when one replica has no present row of a modality (its visit runs with a zero-weight loss)."""
    a, b = data.spec.names
    batches = []
    for i in range(3):
        full = data.train.__getitems__(list(range(32 * i, 32 * i + 32)))
        hidden = missing_masks(32, data.spec.names, 0.3, seed=i)
        hidden[b][:16] = True  # replica 0 never sees b
        hidden[a][:16] = False
        batches.append(full.with_missing(hidden))
    single = _mla(data, order="shuffle")
    step = methods.TrainStep(single, torch.optim.SGD(single.parameters(), lr=0.2))
    for i, batch in enumerate(batches):
        step.global_step = i
        single.training_step(batch, step)

    replicas = [_mla(data, order="shuffle"), _mla(data, order="shuffle")]
    sim = _Replicas()
    errors: list[BaseException] = []

    def work(rank: int) -> None:
        try:
            torch.set_num_threads(1)
            rstep = sim.step(rank, replicas[rank], lr=0.2)
            rows = torch.arange(16 * rank, 16 * rank + 16)
            for i, batch in enumerate(batches):
                rstep.global_step = i
                replicas[rank].training_step(batch.subset(rows), rstep)
        except BaseException as e:  # surfaced below; a hung barrier breaks for the peer
            errors.append(e)
            sim.barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for replica in replicas:
        for (k, x), y in zip(
            single.state_dict().items(), replica.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6, msg=k)


# ------------------------------------------------------------------ fusion


def _direct_entropy_weights(logits: dict[str, torch.Tensor], present, t: float) -> np.ndarray:
    names = list(logits)
    b = next(iter(logits.values())).shape[0]
    out = np.zeros((b, len(names)))
    for i in range(b):
        scores = {}
        for j, m in enumerate(names):
            if not bool(present[m][i]):
                continue
            z = logits[m][i].double().numpy()
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            scores[j] = -float(-(p * np.log(p)).sum()) / t
        if scores:
            top = max(scores.values())
            total = sum(math.exp(s - top) for s in scores.values())
            for j, s in scores.items():
                out[i, j] = math.exp(s - top) / total
    return out


def _logits(b: int = 10, c: int = 4, names=("a", "v", "t"), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, c, generator=g) * (1 + 2 * k) for k, m in enumerate(names)}


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_entropy_weights_equal_direct_computation(temperature: float) -> None:
    logits = _logits()
    present = {m: torch.ones(10, dtype=torch.bool) for m in logits}
    present["v"][[1, 4, 7]] = False
    present["t"][[4, 5]] = False
    w = fusion_weights(logits, present, "entropy", temperature)
    direct = _direct_entropy_weights(logits, present, temperature)
    np.testing.assert_allclose(torch.stack(list(w.values()), -1).numpy(), direct, atol=1e-6)
    assert float(w["v"][1]) == 0.0 and float(w["t"][5]) == 0.0
    fused = fuse_logits(logits, w)
    expected = sum(w[m][:, None] * logits[m] for m in logits)
    torch.testing.assert_close(fused, expected)


def test_missing_modality_is_not_fused_as_zeros() -> None:
    logits = _logits(b=6, names=("a", "v"))
    present = {"a": torch.ones(6, dtype=torch.bool), "v": torch.ones(6, dtype=torch.bool)}
    present["v"][2] = False
    logits["v"][2] = 0.0  # what a missing modality's input would give: zeros/the bias
    for mode in ("entropy", "mean"):
        w = fusion_weights(logits, present, mode)
        fused = fuse_logits(logits, w)
        assert float(w["v"][2]) == 0.0 and float(w["a"][2]) == 1.0
        torch.testing.assert_close(fused[2], logits["a"][2])  # a alone, not (a + 0) / 2
    # NaN garbage in a missing row cannot leak either
    logits["v"][2] = float("nan")
    fused = fuse_logits(logits, fusion_weights(logits, present, "mean"))
    assert torch.isfinite(fused).all()
    # no modality present: weights 0, logits 0 (uninformative), never NaN
    nothing = {m: torch.zeros(6, dtype=torch.bool) for m in present}
    w = fusion_weights(logits, nothing, "entropy")
    assert all(float(x.abs().sum()) == 0.0 for x in w.values())


def test_mean_fixed_and_batch_entropy_fusion() -> None:
    logits = _logits(b=8)
    present = {m: torch.ones(8, dtype=torch.bool) for m in logits}
    present["t"][0] = False
    mean = fusion_weights(logits, present, "mean")
    assert torch.allclose(mean["a"][1:], torch.full((7,), 1 / 3))
    assert float(mean["a"][0]) == pytest.approx(0.5) and float(mean["t"][0]) == 0.0

    fixed = fusion_weights(logits, present, "fixed", fixed={"a": 2.0, "v": 1.0, "t": 1.0})
    assert float(fixed["a"][1]) == pytest.approx(0.5) and float(fixed["t"][1]) == 0.25
    assert float(fixed["a"][0]) == pytest.approx(2 / 3) and float(fixed["t"][0]) == 0.0

    # reference behaviour: softmax over the batch, one entropy and weight per modality
    batch = fusion_weights(logits, present, "batch_entropy")
    ent = []
    for m in logits:
        z = logits[m][present[m]].double()
        p = torch.softmax(z, dim=0)
        ent.append(float(-(p * torch.log(p)).sum()))
    gate = np.exp(max(ent) - np.array(ent))
    gate /= gate.sum()
    for j, m in enumerate(logits):
        np.testing.assert_allclose(batch[m][1:].numpy(), gate[j], rtol=1e-5)
    assert float(batch["t"][0]) == 0.0
    np.testing.assert_allclose(
        batch["a"][0].item(), gate[0] / (gate[0] + gate[1]), rtol=1e-5
    )  # renormalised over the modalities present in that sample


def test_fixed_weights_are_validated_against_the_dataset(data) -> None:
    a, b = data.spec.names
    with pytest.raises(ValueError, match="fusion_weights"):
        methods.create("mla", data.spec, MODEL, fusion="fixed")
    with pytest.raises(ValueError, match="unknown"):
        methods.create("mla", data.spec, MODEL, fusion="fixed", fusion_weights={a: 1, "x": 1})
    with pytest.raises(ValueError, match="missing"):
        methods.create("mla", data.spec, MODEL, fusion="fixed", fusion_weights={a: 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        methods.create("mla", data.spec, MODEL, fusion="fixed", fusion_weights={a: -1, b: 2})
    ok = methods.create("mla", data.spec, MODEL, fusion="fixed", fusion_weights={a: 3, b: 1})
    ok.eval()
    with torch.no_grad():
        pred = ok.predict(_batch(data, 8))
    torch.testing.assert_close(pred.per_sample[f"fusion_weight/{a}"], torch.full((8,), 0.75))
    torch.testing.assert_close(
        pred.logits, 0.75 * pred.modality_logits[a] + 0.25 * pred.modality_logits[b]
    )


def test_predict_reports_per_sample_weights(data) -> None:
    method = _mla(data)
    method.eval()
    batch = _batch(data, 12)
    masks = missing_masks(12, data.spec.names, 0.4, seed=2)
    batch = batch.with_missing(masks)
    with torch.no_grad():
        pred = method.predict(batch)
    w = torch.stack([pred.per_sample[f"fusion_weight/{m}"] for m in data.spec.names], -1)
    assert w.shape == (12, 2)
    torch.testing.assert_close(w.sum(-1), torch.ones(12))
    for i, m in enumerate(data.spec.names):
        assert torch.all(w[~batch.present[m], i] == 0)
        torch.testing.assert_close(
            pred.modality_logits[m][batch.present[m]],
            method.head(method.encoders[m](batch.inputs[m][batch.present[m]])),
        )


def test_reference_preset_loads() -> None:
    cfg = load_config("preset:mla_reference")
    assert cfg.method.name == "mla"
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum) == ("sgd", 1e-3, 0.9)
    assert cfg.optim.weight_decay == 1e-4 and cfg.optim.schedule == "step"
    assert (cfg.optim.milestones, cfg.optim.gamma) == ([70], 0.1)
    assert (cfg.train.epochs, cfg.train.batch_size) == (100, 64)
    with pytest.raises(ConfigError):
        load_config("preset:mla_reference", ["method.hparams.no_such_option=1"])
    # a bare `off` stays a string (our YAML follows 1.2: only true/false are booleans)
    off = load_config("preset:mla_reference", ["method.hparams.hgm=off"])
    assert methods.validate_hparams("mla", off.method.hparams).hgm == "off"


# ------------------------------------------------------------------ end to end, real data


@pytest.mark.slow
def test_train_handwritten_with_missing_modalities(tmp_path) -> None:
    """Three epochs on the real handwritten views, 30% of each view hidden in training, then
    the best checkpoint evaluated with views hidden at test time too."""
    cfg = load_config(
        CONFIGS / "handwritten.yaml",
        [
            "method.name=mla",
            "dataset.train_missing_rate={pix: 0.3, fou: 0.3, fac: 0.3, zer: 0.3, kar: 0.5}",
            "train.epochs=3",
            f"out={tmp_path}",
            "name=run",
            "logging.progress=none",
        ],
    )
    result = unipair.train(cfg)
    test = result.summary["test"]
    names = result.summary["modalities"]
    assert test["acc"] > 0.9
    weights = {m: test[f"fusion_weight/{m}"] for m in names}
    assert all(0.0 < w < 1.0 for w in weights.values())
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)  # every test view present
    for m in names:
        assert test[f"acc/{m}"] > 0.3
    summary = fusion_weight_summary(result.run_dir / "test_predictions.npz")
    assert set(summary) == set(names)
    for m, row in summary.items():
        assert row["mean"] == pytest.approx(weights[m], abs=1e-5)
        assert row["q05"] <= row["q50"] <= row["q95"] and row["present"] == 1.0
    assert sum(row["top"] for row in summary.values()) == pytest.approx(1.0)

    # the best checkpoint, with modalities missing at test time
    data = load_data(cfg)
    method = build_method(cfg, data)
    state = torch.load(result.run_dir / "best.ckpt", map_location="cpu", weights_only=True)
    method.load_state_dict(state["method"])
    method.eval()
    batch = data.test.__getitems__(list(range(len(data.test))))
    hidden = missing_masks(len(batch), names, 0.5, seed=0)
    partial = batch.with_missing(hidden)
    with torch.no_grad():
        full, part = method.predict(batch), method.predict(partial)
    for m in names:
        w = part.per_sample[f"fusion_weight/{m}"]
        assert torch.all(w[hidden[m]] == 0)
    acc_full = float((full.logits.argmax(-1) == batch.labels).float().mean())
    acc_part = float((part.logits.argmax(-1) == batch.labels).float().mean())
    assert acc_full == pytest.approx(test["acc"], abs=1e-6)
    assert acc_part > 0.9  # half of each view gone: the present ones still decide
