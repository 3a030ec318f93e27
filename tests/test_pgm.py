"""PgM: partitions, gradient isolation of the uni part, stop-gradient reconstruction, parameter
groups and their learning rates, key validation, the batched cross-attention, ablation switches,
OGM-GE on top, and the figures of a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unipair import methods
from unipair.data.synthetic import load_synthetic
from unipair.engine.config import ConfigError, OptimConfig, load_config
from unipair.engine.optim import build_optimizer, check_parameter_groups
from unipair.models.pgm import ModalPartitioner, PairedLearner
from unipair.pgm import PgMAdapter, PgMConfig

torch.set_num_threads(1)

MODEL = {"width": 16, "encoders": {"*": {"options": {"hidden": [32], "dropout": 0.0}}}}


@pytest.fixture(scope="module")
def data3():
    return load_synthetic(3, num_samples=240, num_classes=3, seed=1)


def _batch(data, n: int = 32):
    return data.train.__getitems__(list(range(n)))


def _pgm(data, seed: int = 0, **hp):
    torch.manual_seed(seed)
    return methods.create("pgm", data.spec, MODEL, **hp)


# ---- partitioner ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 10), (5, 7, 10)], ids=["vector", "sequence"])
def test_split_partition_is_complementary_masks(shape) -> None:
    part = ModalPartitioner(10, rho=0.3, mode="split")
    h = torch.randn(*shape)
    u, p, s = part(h)
    assert u.shape == p.shape == h.shape
    mask = torch.tensor([1.0] * 3 + [0.0] * 7)
    torch.testing.assert_close(s, mask)
    torch.testing.assert_close(u, h * mask)
    torch.testing.assert_close(p, h * (1 - mask))
    assert (u[..., 3:] == 0).all() and (p[..., :3] == 0).all()


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("shape", [(5, 10), (5, 7, 10)], ids=["vector", "sequence"])
def test_soft_partition_gate(shape, conditional: bool) -> None:
    part = ModalPartitioner(10, rho=0.25, mode="soft", conditional=conditional)
    h = torch.randn(*shape)
    u, p, s = part(h)
    assert u.shape == p.shape == h.shape
    assert s is not None and ((s > 0) & (s < 1)).all()
    assert s.shape == ((10,) if not conditional else h.shape)
    torch.testing.assert_close(u + p, h)
    torch.testing.assert_close(u, s * h)
    # ramp init: the first dims lean uni, the last paired
    assert part.logits[0] > part.logits[-1]


def test_no_partitioner_gives_u_equal_p_equal_h() -> None:
    h = torch.randn(4, 8)
    u, p, s = ModalPartitioner(8, rho=0.5, mode="none")(h)
    assert s is None and u is h and p is h


def test_soft_gate_prior_pulls_mean_gate_toward_rho(data3) -> None:
    method = _pgm(data3, partition="soft", rho={"*": 0.2, "m0": 0.8}, gate_init="constant")
    with torch.no_grad():
        for part in method.pgm.partitioners.values():
            part.logits.fill_(0.0)  # mean gate 0.5 everywhere
    b = _batch(data3)
    losses = method.pgm.losses(method(b), b.labels)
    assert losses["prior/m0"].item() == pytest.approx(0.09)  # (0.5 - 0.8)^2
    assert losses["prior/m1"].item() == pytest.approx(0.09)  # (0.5 - 0.2)^2
    g0, g1 = torch.autograd.grad(
        losses["prior/m0"] + losses["prior/m1"],
        [method.pgm.partitioners["m0"].logits, method.pgm.partitioners["m1"].logits],
    )
    assert (g0 < 0).all() and (g1 > 0).all()  # gradient descent raises m0's gate, lowers m1's


# ---- isolation of the uni part, stop-gradient on the reconstruction target --------------------
def test_uni_gradient_does_not_depend_on_other_modalities(data3) -> None:
    method = _pgm(data3)
    method.eval()  # no dropout: two forward passes must be comparable
    b = _batch(data3)
    learner = list(method.pgm.uni_learners["m0"].parameters())
    enc_other = list(method.pgm.encoders["m1"].parameters())

    def grads(batch):
        out = method(batch)
        loss = method.pgm.losses(out, batch.labels)["uni/m0"]
        return torch.autograd.grad(loss, learner + enc_other, allow_unused=True)

    g = grads(b)
    perturbed = type(b)(
        {m: x + 3.0 * torch.randn_like(x) if m != "m0" else x for m, x in b.inputs.items()},
        b.present,
        b.labels,
        b.index,
    )
    g2 = grads(perturbed)
    for a, c in zip(g[: len(learner)], g2[: len(learner)], strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    # and the uni loss of m0 has no path at all into another modality's encoder
    assert all(x is None for x in g[len(learner) :])
    # whereas the fused loss does depend on the other modalities
    out = method(b)
    task = method.pgm.losses(out, b.labels)["task"]
    assert any(x is not None for x in torch.autograd.grad(task, enc_other, allow_unused=True))


def test_reconstruction_target_gets_no_gradient(data3) -> None:
    method = _pgm(data3)
    b = _batch(data3)
    out = method(b)
    # the recorded target h_m: a leaf we can ask about
    target = out.features["m0"].detach().clone().requires_grad_(True)
    out.features = {**out.features, "m0": target}
    rec = method.pgm.losses(out, b.labels)["rec/m0"]
    (g,) = torch.autograd.grad(rec, [target], allow_unused=True)
    assert g is None
    # but the reconstruction itself is trained, through the decoder and the learners
    dec = list(method.pgm.decoders["m0"].parameters())
    assert all(x is not None for x in torch.autograd.grad(rec, dec, retain_graph=True))


def test_losses_skip_missing_rows(data3) -> None:
    method = _pgm(data3)
    method.eval()
    b = _batch(data3)
    gone = b.with_missing({"m2": torch.ones(len(b), dtype=torch.bool)})
    out = method(gone)
    losses = method.pgm.losses(out, gone.labels)
    assert losses["uni/m2"].item() == 0.0 and losses["rec/m2"].item() == 0.0
    assert (out.paired_out["m2"] == 0).all()  # a missing target gets no paired feature
    assert torch.isfinite(losses["loss"])


# ---- paired learner -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["per_pair", "per_target", "shared"])
@pytest.mark.parametrize("length", [1, 5])
def test_missing_source_contributes_nothing(mode: str, length: int) -> None:
    torch.manual_seed(0)
    mods = ["a", "b", "c"]
    pl = PairedLearner(mods, dict.fromkeys(mods, 8), 8, 2, mode, 0.0)
    shape = (4, length, 8) if length > 1 else (4, 8)
    p = {m: torch.randn(*shape) for m in mods}
    present = {m: torch.ones(4, dtype=torch.bool) for m in mods}
    present["c"] = torch.tensor([True, False, True, False])
    out = pl(p, present)
    garbage = {**p, "c": 100 * torch.randn(*shape)}
    out2 = pl(garbage, present)
    for m in ("a", "b"):  # rows where c is missing do not see c at all
        torch.testing.assert_close(out[m][[1, 3]], out2[m][[1, 3]])
    assert (out["c"][[1, 3]] == 0).all()
    # with only one other present source, the mean is that source's message alone
    only_a = {
        m: torch.tensor([True, True, True, True]) if m == "a" else ~torch.ones(4, dtype=torch.bool)
        for m in mods
    }
    solo = pl(p, {**only_a, "b": torch.ones(4, dtype=torch.bool)})
    assert torch.isfinite(solo["a"]).all()


def test_shared_weight_shortcut_equals_full_attention() -> None:
    torch.manual_seed(0)
    mods = ["a", "b", "c", "d"]
    pl = PairedLearner(mods, dict.fromkeys(mods, 8), 8, 2, "per_target", 0.0)
    x = torch.randn(4, 6, 1, 8)
    present = {m: torch.rand(6) > 0.3 for m in mods}
    valid = torch.stack([present[m] for m in mods])[..., None]
    fast = pl._shared_vectors(x[:, :, 0], present)
    full = pl._attend(x, valid, 6, 1)
    torch.testing.assert_close(fast, full)


def test_sequence_and_mixed_widths_through_the_adapter() -> None:
    torch.manual_seed(0)

    class Seq(nn.Module):
        def __init__(self, d_in: int, d: int) -> None:
            super().__init__()
            self.proj = nn.Linear(d_in, d)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    enc = {"text": Seq(5, 16), "audio": Seq(3, 8), "image": nn.Linear(12, 24)}
    adapter = PgMAdapter(
        enc,
        {"text": 16, "audio": 8, "image": 24},
        4,
        {"heads": 2, "uni_heads": 2, "attn_dim": 16},
        sequence={"text": True, "audio": True},
    )
    inputs = {
        "text": torch.randn(6, 7, 5),
        "audio": torch.randn(6, 11, 3),
        "image": torch.randn(6, 12),
    }
    present = {m: torch.ones(6, dtype=torch.bool) for m in enc}
    present["audio"][2] = False
    out = adapter(inputs, present)
    assert out.paired_out["text"].shape == (6, 7, 16) and out.paired_out["audio"].shape == (
        6,
        11,
        8,
    )
    assert out.recon["image"].shape == (6, 24) and out.logits.shape == (6, 4)
    losses = adapter.losses(out, torch.randint(0, 4, (6,)))
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])


# ---- parameter groups and learning rates ------------------------------------------------------
def test_every_parameter_in_one_group_and_multipliers_reach_the_optimizer(data3) -> None:
    lr_mult = {
        "*": {"decoder": 3.0},
        "m0": {"uni": 2.0, "paired": 0.5},
        "m1": 0.25,
        "shared": {"task": 0.1},
    }
    method = _pgm(data3, lr_mult=lr_mult, partition="soft")
    groups = method.parameter_groups()
    check_parameter_groups(method, groups)
    names = {g.name for g in groups}
    for m in data3.spec.names:
        assert {f"{m}/{p}" for p in ("encoder", "partitioner", "uni", "paired", "decoder")} <= names
    assert {"shared/task", "shared/paired"} <= names
    opt = build_optimizer(groups, OptimConfig(lr=0.01))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    expect = {
        "m0/uni": 0.02,
        "m0/paired": 0.005,
        "m0/decoder": 0.03,
        "m0/encoder": 0.01,
        "m1/uni": 0.0025,
        "m1/decoder": 0.0025,  # a modality's own entry overrides '*'
        "m2/decoder": 0.03,
        "m2/uni": 0.01,
        "shared/task": 0.001,
        "shared/paired": 0.01,
    }
    for name, lr in expect.items():
        assert lrs[name] == pytest.approx(lr), name
    uniform = _pgm(data3, lr_mult=lr_mult, uniform_lr=True)
    assert {g.lr_mult for g in uniform.parameter_groups()} == {1.0}


@pytest.mark.parametrize("mode", ["per_pair", "per_target", "shared"])
def test_groups_cover_every_cross_attention_mode(data3, mode: str) -> None:
    method = _pgm(data3, cross_attention=mode)
    check_parameter_groups(method, method.parameter_groups())


def test_engine_logs_each_group_lr(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "dataset.name=synthetic",
            "method.name=pgm",
            "method.hparams.lr_mult={m0: {uni: 2.0}, shared: {task: 0.5}}",
            "model.width=16",
            "optim.lr=0.01",
            "train.epochs=1",
            "logging.progress=none",
            f"out={tmp_path}",
        ],
    )
    import unipair

    result = unipair.train(cfg)
    row = result.history[0]
    assert row["lr/m0/uni"] == pytest.approx(0.02)
    assert row["lr/m1/uni"] == pytest.approx(0.01)
    assert row["lr/shared/task"] == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("hparams", "match"),
    [
        ({"lr_mult": {"audoi": 2.0}}, "unknown key 'audoi'"),
        ({"lr_mult": {"m0": {"unii": 2.0}}}, "unknown part 'unii'"),
        ({"lr_mult": {"shared": {"encoder": 2.0}}}, "unknown part 'encoder'"),
        ({"lr_mult": {"m0": -1.0}}, ">= 0"),
        ({"rho": {"m9": 0.3}}, "unknown modality 'm9'"),
        ({"rho": 1.5}, r"\[0, 1\]"),
        ({"rho": {"m0": -0.1}}, r"\[0, 1\]"),
    ],
)
def test_bad_keys_give_clear_errors(data3, hparams, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        methods.create("pgm", data3.spec, MODEL, **hparams)


def test_bad_part_rejected_when_the_config_is_loaded() -> None:
    with pytest.raises(ConfigError, match="unknown part 'unii'"):
        load_config(None, ["method.name=pgm", "method.hparams.lr_mult={pix: {unii: 2}}"])


# ---- ablations, OGM-GE base, prediction -------------------------------------------------------
@pytest.mark.parametrize(
    "switch",
    [
        {"partition": "none"},
        {"uni_learner": False},
        {"paired_learner": False},
        {"decoder": False},
        {"uniform_lr": True},
        {"partition": "soft", "gate_conditional": True},
        {"task_input": "learners"},
    ],
)
def test_ablation_switches_train(data3, switch) -> None:
    method = _pgm(data3, **switch)
    groups = method.parameter_groups()
    check_parameter_groups(method, groups)
    step = methods.TrainStep.local(method, build_optimizer(groups, OptimConfig(lr=1e-2)))
    b = _batch(data3)
    logs = method.training_step(b, step)
    assert torch.isfinite(logs["loss"])
    method.eval()
    with torch.no_grad():
        pred = method.predict(b)
    assert set(pred.modality_logits) == set(data3.spec.names)
    if switch.get("uni_learner") is False:
        assert not any(k.startswith("uni/") for k in logs)
    if switch.get("paired_learner") is False:
        assert "paired" not in logs and "paired_logits" not in pred.arrays
    if switch.get("decoder") is False:
        assert not any(k.startswith("rec/") for k in logs)


def test_prediction_reports_uni_heads(data3) -> None:
    method = _pgm(data3, rho={"*": 0.25, "m1": 0.75})
    method.eval()
    b = _batch(data3)
    with torch.no_grad():
        pred = method.predict(b)
        out = method(b)
    for m in data3.spec.names:
        torch.testing.assert_close(pred.modality_logits[m], out.uni_logits[m])
    assert pred.per_sample["uni_share/m1"].shape == (32,)
    assert pred.per_sample["uni_share/m1"][0].item() == pytest.approx(0.75)
    assert pred.arrays["paired_logits"].shape == (32, data3.spec.num_classes)


@pytest.mark.parametrize("scores", ["uni", "task"])
def test_ogm_ge_base_modulates_encoder_gradients(data3, scores: str) -> None:
    hp = {"base": "ogm_ge", "dropout": 0.0, "ogm": {"alpha": 5.0, "noise": False, "scores": scores}}
    method = _pgm(data3, seed=3, **hp)
    b = _batch(data3)
    frozen = torch.optim.SGD(method.parameters(), lr=0.0)  # keep the weights: compare grads
    logs = method.training_step(b, methods.TrainStep.local(method, frozen))
    coeffs = {m: float(logs[f"coeff/{m}"]) for m in data3.spec.names}
    assert max(coeffs.values()) <= 1 and min(coeffs.values()) < 1
    grads = {m: method.pgm.encoders[m].net[1].weight.grad.clone() for m in coeffs}
    method.zero_grad()
    method.pgm.losses(method(b), b.labels)["loss"].backward()
    for m, k in coeffs.items():  # each encoder's gradient is the PgM gradient times k_m
        torch.testing.assert_close(grads[m], k * method.pgm.encoders[m].net[1].weight.grad)


def test_config_defaults_are_documented() -> None:
    for name, f in PgMConfig.model_fields.items():
        assert f.description, f"PgMConfig.{name} has no description"


# ---- real data: speed and the figures --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import unipair

    out = tmp_path_factory.mktemp("pgm_runs")
    cfg = load_config(
        "configs/handwritten.yaml" if Path("configs/handwritten.yaml").is_file() else None,
        [
            "dataset.name=handwritten",
            "method.name=pgm",
            "method.hparams.partition=soft",
            "train.epochs=2",
            "logging.progress=none",
            f"out={out}",
            "name=tiny",
        ],
    )
    return unipair.train(cfg).run_dir


def test_part_shares_measure_what_each_part_carries(tiny_run: Path) -> None:
    from unipair.evaluation.evaluate import LoadedRun
    from unipair.evaluation.reports.pgm import part_shares

    run = LoadedRun(tiny_run)
    shares = part_shares(run.method, run.data.test)
    test_acc = json.loads((tiny_run / "summary.json").read_text())["test"]["acc"]
    assert shares["*"]["acc"] == pytest.approx(test_acc, abs=1e-6)  # the unablated model
    for m, row in shares.items():
        if np.isfinite(row["share"]):
            assert 0.0 <= row["share"] <= 1.0, m


def test_viz_draws_several_pgm_runs_side_by_side(tiny_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unipair.cli.main import app

    other = tmp_path / "copy"
    other.mkdir()
    for f in tiny_run.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    res = CliRunner().invoke(app, ["viz", str(tiny_run), str(other), "--out", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "v" / "pgm_distribution.png").stat().st_size > 10_000


def test_pgm_report_writes_figures(tiny_run: Path, tmp_path: Path) -> None:
    from unipair.evaluation.reports.pgm import pgm_report

    figures = pgm_report(tiny_run, tmp_path, max_points=300)
    names = {f.path.name for f in figures}
    assert names == {"pgm_tsne.png", "pgm_partition.png", "pgm_accuracy.png", "pgm_parts.png"}
    for f in figures:
        assert f.path.parent == tmp_path and f.path.stem == f.name and f.caption, f
        assert f.path.is_file() and f.path.stat().st_size > 10_000, f
        assert f.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- share_from: heldout ------------------------------------------------------------------------
@pytest.mark.parametrize("partition", ["split", "soft"])
def test_a_measured_share_moves_the_partition_and_survives_a_state_dict(
    data3, partition: str
) -> None:
    pgm = _pgm(data3, partition=partition, share_from="heldout")
    part = pgm.pgm.partitioners["m0"]
    h = torch.randn(4, 16)
    before = float(part.gate(h).mean())
    part.set_share(0.25)
    after = float(part.gate(h).mean())
    assert after < before - 0.15 and part.target == 0.25
    if partition == "split":
        assert after == 0.25  # exactly the first 4 of 16 dims
    fresh = _pgm(data3, partition=partition, share_from="heldout")
    fresh.load_state_dict(pgm.state_dict())  # a resumed run continues from the measured share
    assert fresh.pgm.partitioners["m0"].target == 0.25
    assert torch.equal(fresh.pgm.partitioners["m0"].gate(h), part.gate(h))
    assert _pgm(data3).heldout_fraction() == 0.0
    assert _pgm(data3, share_from="heldout", share_heldout=0.2).heldout_fraction() == 0.2


@pytest.mark.slow
def test_the_measured_share_follows_the_task(tmp_path: Path) -> None:
    """On the interaction family the uni share measured on the held-out part is high where
    each modality predicts alone (w = 0) and at its floor where only the product does (w = 1)."""
    import unipair

    shares = {}
    for weight in (0.0, 1.0):
        cfg = load_config(
            "configs/interaction.yaml",
            [
                "method.name=pgm",
                "method.hparams.share_from=heldout",
                f"dataset.options.weight={weight}",
                "train.epochs=8",
                "train.test=false",
                "logging.progress=none",
                f"out={tmp_path}",
                f"name=w{weight}",
            ],
        )
        run = unipair.train(cfg)
        shares[weight] = [run.summary["val"][f"uni_share/{m}"] for m in ("a", "b")]
    assert min(shares[0.0]) > 0.3, shares
    assert max(shares[1.0]) < 0.2, shares


def test_a_resumed_run_continues_from_the_measured_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unipair
    from backbones import interrupted

    def cfg(name: str) -> dict:
        return {
            "dataset": {"name": "interaction", "options": {"weight": 0.5, "num_samples": 600}},
            "model": {"width": 16},
            "method": {"name": "pgm", "hparams": {"share_from": "heldout"}},
            "train": {"epochs": 3, "seed": 0, "batch_size": 64},
            "logging": {"progress": "none"},
            "out": str(tmp_path),
            "name": name,
        }

    whole = unipair.train(cfg("whole")).summary
    run = interrupted(cfg("cut"), monkeypatch, after=2)
    resumed = unipair.train(cfg("cut"), resume=run).summary
    assert resumed["val"] == whole["val"] and resumed["test"] == whole["test"]
    assert 0.1 <= whole["val"]["uni_share/a"] <= 0.9
