"""``unipair diagnose``: the rules on hand-made numbers, the validation probe, and the command
end to end on real data (handwritten, three views, two epochs), reuse included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unipair.cli.main import app
from unipair.evaluation.diagnose import (
    Evidence,
    ModalityEvidence,
    Thresholds,
    recommend,
    summarize,
)
from unipair.evaluation.probes import fit_probe_on_validation

runner = CliRunner()


# ---- the rules on constructed numbers ---------------------------------------------------------
def _mod(probe_alone=0.9, probe_joint=0.89, head_alone=0.9, head_joint=0.88, loo=0.01, shap=0.2):
    return ModalityEvidence(probe_alone, probe_joint, head_alone, head_joint, loo, shap)


def _evidence(mods: dict[str, ModalityEvidence], fused=0.95, prior=0.1, seeds=(0, 1, 2)):
    return Evidence(mods, fused, prior, list(seeds), 200)


def _rules(rec) -> list[str]:
    return [f.rule for f in rec.findings]


def test_small_gaps_mean_joint_is_fine() -> None:
    rec = recommend(_evidence({"a": _mod(), "b": _mod(shap=0.25)}))
    assert _rules(rec) == ["balanced"]
    assert rec.methods == [] and rec.findings[0].advice == "no balancing method needed"
    assert rec.caveats == []  # three seeds, Shapley values present: nothing to warn about
    assert "lowest probe gap -1.0 > -5" in rec.findings[0].evidence[0]


def test_one_seed_is_a_caveat_with_the_noise_level() -> None:
    rec = recommend(_evidence({"a": _mod(), "b": _mod()}, seeds=(7,)))
    assert len(rec.caveats) == 1
    caveat = rec.caveats[0]
    assert caveat.startswith("one seed (7)") and "--seeds 0,1,2" in caveat
    # binomial standard error of a difference of two 90% accuracies on 200 rows: 3.0 points
    assert "200 validation rows" in caveat and "about 3.0 points" in caveat
    assert any(line.startswith("caveat: one seed") for line in rec.lines())


def test_a_large_probe_gap_means_an_under_trained_encoder() -> None:
    mods = {"a": _mod(), "b": _mod(probe_alone=0.85, probe_joint=0.77, head_joint=0.5)}
    rec = recommend(_evidence(mods))
    assert _rules(rec) == ["under_trained_encoder"]  # b's head is not blamed: its encoder is
    f = rec.findings[0]
    assert f.modalities == ("b",) and f.methods == ("mla", "pgm")
    assert f.evidence == ("b: probe in joint 77.0% vs alone 85.0%, gap -8.0 <= -5",)


def test_the_probe_threshold_is_inclusive_and_configurable() -> None:
    at = {"a": _mod(), "b": _mod(probe_alone=0.85, probe_joint=0.80)}  # exactly -5 points
    assert _rules(recommend(_evidence(at))) == ["under_trained_encoder"]
    just_above = {"a": _mod(), "b": _mod(probe_alone=0.85, probe_joint=0.801)}
    assert _rules(recommend(_evidence(just_above))) == ["balanced"]
    assert _rules(recommend(_evidence(at), Thresholds(probe_gap=6))) == ["balanced"]


def test_a_learned_encoder_with_a_weak_own_head_means_the_head_ignores_it() -> None:
    mods = {"a": _mod(), "b": _mod(probe_alone=0.85, probe_joint=0.84, head_alone=0.85,
                                   head_joint=0.5)}  # fmt: skip
    rec = recommend(_evidence(mods))
    assert _rules(rec) == ["head_ignores_modality"]
    f = rec.findings[0]
    assert f.modalities == ("b",) and f.methods == ("ogm_ge", "mla")
    assert "own head 50.0% vs alone 85.0%, gap -35.0 <= -10" in f.evidence[0]
    assert "probe gap -1.0 > -5" in f.evidence[0]


def test_a_small_shapley_share_also_means_the_head_ignores_it() -> None:
    # equal strength alone, but b gets a tenth of a's share of the fused gain
    mods = {"a": _mod(shap=0.5), "b": _mod(shap=0.05)}
    rec = recommend(_evidence(mods))
    assert _rules(rec) == ["head_ignores_modality"]
    assert rec.findings[0].modalities == ("b",)
    assert "Shapley share ratio 0.18 < 0.5" in rec.findings[0].evidence[0]


def test_joint_below_the_best_unimodal_run_is_hurt_by_fusion() -> None:
    mods = {"a": _mod(head_alone=0.97), "b": _mod()}
    rec = recommend(_evidence(mods, fused=0.94))
    assert _rules(rec) == ["fusion_hurts"]
    f = rec.findings[0]
    assert f.methods == ("mla", "pgm") and "unimodal a model is the baseline" in f.advice
    assert f.evidence == ("joint fused 94.0% vs unimodal a 97.0%, -3.0 < -1",)


def test_an_interaction_signal_points_to_pgm() -> None:
    # XOR-like: each modality alone is at chance, together they are right; removing either
    # loses everything, so the leave-one-out drops exceed the fused gain over chance
    xor = _mod(probe_alone=0.55, probe_joint=0.55, head_alone=0.55, head_joint=0.55, loo=0.45,
               shap=0.225)  # fmt: skip
    rec = recommend(_evidence({"a": xor, "b": xor}, fused=0.95, prior=0.5))
    assert _rules(rec) == ["balanced", "interaction"]
    f = rec.findings[1]
    assert f.methods == ("pgm",)
    assert f.evidence[0] == "joint fused 95.0% vs unimodal a 55.0%, +40.0 >= +3"
    assert "+45.0 beyond the fused gain over chance (45.0), >= +1" in f.evidence[1]
    # redundant modalities: fused is no better than each alone, removing one costs nothing
    redundant = _mod(head_alone=0.95, loo=0.0, shap=0.425)
    assert "interaction" not in _rules(recommend(_evidence({"a": redundant, "b": redundant})))


def test_missing_shapley_values_are_a_caveat() -> None:
    rec = recommend(_evidence({"a": _mod(shap=None), "b": _mod(shap=None)}))
    assert _rules(rec) == ["balanced"]
    assert rec.caveats and "no Shapley values" in rec.caveats[0]


def _run(label: str, seed: int, val: dict, probes: dict, contributions=None) -> dict:
    return {
        "label": label,
        "seed": seed,
        "summary": {"val": val},
        "measures": {"val_rows": 200, "probes": probes, "contributions": contributions},
    }


def test_summarize_takes_gaps_within_each_seed_then_averages() -> None:
    runs = []
    for seed, (pj, pa) in enumerate([(0.80, 0.90), (0.70, 0.90)]):
        contrib = {"full": 0.95, "prior": 0.1, "leave_one_out": {"a": 0.0, "b": 0.02},
                   "shapley": {"a": 0.5, "b": 0.35}}  # fmt: skip
        runs.append(_run("joint", seed, {"acc": 0.95, "acc/a": 0.9, "acc/b": 0.6},
                         {"a": {"acc": 0.92}, "b": {"acc": pj}}, contrib))  # fmt: skip
        runs.append(_run("unimodal:a", seed, {"acc": 0.93, "acc/a": 0.93}, {"a": {"acc": 0.93}}))
        runs.append(_run("unimodal:b", seed, {"acc": 0.88, "acc/b": 0.88}, {"b": {"acc": pa}}))
    table = summarize(runs, ["a", "b"])
    gap = table["modalities"]["b"]["probe_gap"]
    assert gap["mean"] == pytest.approx(-0.15) and gap["n"] == 2
    assert gap["std"] == pytest.approx(np.std([-0.1, -0.2], ddof=1))
    assert table["modalities"]["b"]["head_gap"]["mean"] == pytest.approx(0.6 - 0.88)
    assert table["overall"]["synergy"]["mean"] == pytest.approx(0.02 - (0.95 - 0.1))
    ev = Evidence.from_table(table)
    assert ev.seeds == [0, 1] and ev.best_modality == "a" and ev.val_rows == 200
    assert _rules(recommend(ev))[0] == "under_trained_encoder"


# ---- the validation probe ----------------------------------------------------------------------
def test_validation_probe_scores_each_half_with_the_other_halfs_choice() -> None:
    rng = np.random.default_rng(0)

    def split(n: int) -> dict:
        y = rng.integers(0, 3, n)
        return {"x": rng.normal(size=(n, 5)) + np.eye(3, 5)[y] * 2.0, "y": y}

    result = fit_probe_on_validation(split(300), split(100))
    assert result["acc"] > 0.8 and len(result["C"]) == 2 and result["val_rows"] == 100
    noise = {"x": rng.normal(size=(300, 5)), "y": rng.integers(0, 3, 300)}
    assert fit_probe_on_validation(noise, split(100))["acc"] < 0.6
    assert np.isnan(fit_probe_on_validation(split(50), split(1))["acc"])


# ---- the command on real data -------------------------------------------------------------------
SMALL = [
    "--epochs", "2", "--set", "model.width=32", "--set", "dataset.options.views=[pix,fou,mor]",
    "--set", "fabric.accelerator=cpu", "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("diagnose")
    args = ["diagnose", "handwritten", *SMALL, "--out", str(out)]
    first = runner.invoke(app, args, catch_exceptions=False)
    second = runner.invoke(app, args, catch_exceptions=False)
    return out, first, second


def test_diagnose_writes_the_json_and_html_with_per_modality_numbers(diagnosed) -> None:
    out, first, _ = diagnosed
    assert first.exit_code == 0, first.output
    doc = json.loads((out / "diagnosis.json").read_text())
    assert doc["split"] == "val" and doc["test_read"] is False and doc["seeds"] == [0]
    assert set(doc["modalities"]) == {"pix", "fou", "mor"}
    for row in doc["modalities"].values():
        for key in ("probe_alone", "probe_joint", "probe_gap", "head_alone", "head_joint",
                    "head_gap", "leave_one_out", "shapley"):  # fmt: skip
            assert row[key]["n"] == 1 and np.isfinite(row[key]["mean"]), key
        assert row["probe_gap"]["mean"] == pytest.approx(
            row["probe_joint"]["mean"] - row["probe_alone"]["mean"]
        )
    # Shapley values share out the fused gain over chance (10 balanced classes)
    shap = sum(row["shapley"]["mean"] for row in doc["modalities"].values())
    assert shap == pytest.approx(doc["overall"]["fused"]["mean"] - 0.1, abs=1e-6)
    assert doc["findings"] and doc["caveats"][0].startswith("one seed (0)")
    assert doc["thresholds"]["probe_gap"] == 5.0
    html = (out / "diagnosis.html").read_text()
    assert "Recommendation" in html and "probe gap" in html and "joint own head" in html
    for text in ("probe: alone", "own-head gap", "recommendation", "caveat: one seed",
                 "validation accuracy", "test split never read"):  # fmt: skip
        assert text in first.output, text


def test_diagnose_never_reads_the_test_split(diagnosed) -> None:
    out = diagnosed[0]
    for summary in (out / "runs").glob("*/seed0/summary.json"):
        data = json.loads(summary.read_text())
        assert data["test"] is None and data["split_sizes"]["test"] is None
        # compare's own analysis (test split) is not run: the diagnosis measures instead
        assert not (summary.parent / "analysis.json").exists()
        assert not (summary.parent / "probes.json").exists()
        assert (summary.parent / "diagnose_measures.json").is_file()
    assert len(list((out / "runs").glob("*/seed0/summary.json"))) == 4


def test_diagnose_reuses_finished_runs(diagnosed) -> None:
    out, first, second = diagnosed
    assert second.exit_code == 0, second.output
    assert second.output.count("(reused)") == 4 and "(reused)" not in first.output
    doc = json.loads((out / "diagnosis.json").read_text())
    assert all(r["reused"] for r in doc["runs"])
    first_rows = first.output.split("probe: alone", 1)[1].split("recommendation")[0]
    second_rows = second.output.split("probe: alone", 1)[1].split("recommendation")[0]
    assert first_rows == second_rows  # the same numbers, read back


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diagnose", "handwriting"], "unknown dataset 'handwriting'"),
        (["diagnose", "handwritten", "--seeds", "a,b"], "--seeds: expected comma-separated"),
        (["diagnose", "handwritten", "--seeds", "1,1"], "--seeds: seeds repeat"),
        (["diagnose", "handwritten", "--seeds", "0,-1"], "--seeds: expected integers in [0"),
        (["diagnose", "handwritten", "--seeds", ","], "--seeds: expected at least one seed"),
        (["diagnose", "handwritten", "--epochs", "0"], "--epochs"),
        (["diagnose", "handwritten", "--set", "method.name=mla"], "diagnose trains joint"),
        (["diagnose", "handwritten", "--set", "method.hparams.alfa=1"], "unknown key 'alfa'"),
        (["diagnose", "handwritten", "--set", "model.widht=3"], "model.widht: unknown key"),
    ],
)
def test_bad_input_is_one_clear_error(args: list[str], message: str, tmp_path: Path) -> None:
    res = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()  # nothing trained
