"""compare, contributions, missing-modality evaluation and the report, on real data."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unipair
from unipair.engine.config import load_config
from unipair.evaluation.compare import aggregate
from unipair.evaluation.compare_cli import run_compare_command
from unipair.evaluation.contributions import leave_one_out, shapley_values
from unipair.evaluation.evaluate import LoadedRun

# ---- Shapley values against the permutation definition -------------------------------------


def _brute_force_shapley(players, value):
    """Average marginal contribution over all orderings (the textbook definition)."""
    phi = dict.fromkeys(players, 0.0)
    orders = list(itertools.permutations(players))
    for order in orders:
        seen: frozenset[str] = frozenset()
        for p in order:
            phi[p] += value(seen | {p}) - value(seen)
            seen = seen | {p}
    return {p: v / len(orders) for p, v in phi.items()}


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.data())
def test_shapley_matches_brute_force(n: int, data) -> None:
    players = [f"m{i}" for i in range(n)]
    subsets = [frozenset(c) for k in range(n + 1) for c in itertools.combinations(players, k)]
    table = {s: data.draw(st.floats(0, 1)) for s in subsets}
    exact = shapley_values(players, table.__getitem__)
    brute = _brute_force_shapley(players, table.__getitem__)
    for p in players:
        assert exact[p] == pytest.approx(brute[p], abs=1e-9)
    # efficiency: the values share out v(all) - v(empty)
    assert sum(exact.values()) == pytest.approx(table[frozenset(players)] - table[frozenset()])


def test_leave_one_out_on_a_small_game() -> None:
    value = {frozenset("ab"): 0.9, frozenset("a"): 0.8, frozenset("b"): 0.5}.__getitem__
    assert leave_one_out(["a", "b"], value) == pytest.approx({"a": 0.4, "b": 0.1})


# ---- missing modalities go through `present` ---------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small")
    cfg = load_config("configs/handwritten.yaml", [
        "train.epochs=2", f"out={out}", "name=r", "logging.progress=none",
        "fabric.accelerator=cpu",
    ])  # fmt: skip
    return unipair.train(cfg).run_dir


def test_missing_rate_evaluation_marks_absent_through_present(small_run: Path) -> None:
    run = LoadedRun(small_run)
    seen = []
    original = run.method.predict

    def spy(batch):
        seen.append(batch)
        return original(batch)

    run.method.predict = spy  # type: ignore[method-assign]
    run.evaluate("test", 0.5, missing_modality="pix")
    present = [b.present["pix"] for b in seen]
    hidden = sum(int((~p).sum()) for p in present)
    assert 150 <= hidden <= 250, hidden  # about half of 400 test samples
    for b in seen:
        gone = ~b.present["pix"]
        assert not b.complete["pix"] or not gone.any()
        assert float(b.inputs["pix"][gone].abs().sum()) == 0.0
        assert all(bool(b.present[m].all()) for m in b.modalities if m != "pix")


# ---- compare end to end ----------------------------------------------------------------------


SMALL = """
dataset: {name: handwritten, options: {views: [pix, fou, mor]}}
model: {width: 32}
train: {epochs: 2}
fabric: {accelerator: cpu}
compare: {missing_rates: [0.0, 0.5]}
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("compare")
    config = out / "small.yaml"
    config.write_text(SMALL)
    args = dict(
        dataset=None, methods=["joint", "ogm_ge"], seeds=[0, 1], config=str(config),
        overrides=[], jobs=1, epochs=None, out=str(out), unimodal=True, command="test",
    )  # fmt: skip
    first = run_compare_command(**args)
    second = run_compare_command(**args)
    return out, config, first, second


def test_compare_writes_results_and_reuses_runs(compared) -> None:
    out, _, first, second = compared
    assert not first.failures and len(first.runs) == 2 * 2 + 3 * 2
    assert all(r["reused"] for r in second.runs), "a finished run was trained again"
    for name in ("results.csv", "results.md", "report.html"):
        assert (out / name).is_file()
    # the table is the mean over seeds of each run's summary
    accs = [r["summary"]["test"]["acc"] for r in first.runs if r["label"] == "joint"]
    assert first.table["joint"]["acc"]["mean"] == pytest.approx(sum(accs) / len(accs))
    gap = first.table["joint"]["laziness_gap"]["mor"]["mean"]
    alone = first.table["unimodal:mor"]["modality_acc"]["mor"]["mean"]
    inside = first.table["joint"]["modality_acc"]["mor"]["mean"]
    assert gap == pytest.approx(inside - alone)
    md = (out / "results.md").read_text()
    assert "| joint |" in md and "Laziness gap" in md and "trained alone" in md
    # three modalities: exact Shapley values, which share out v(all) - v(none)
    row = first.table["joint"]
    assert set(row["shapley"]) == {"pix", "fou", "mor"}
    total = sum(v["mean"] for v in row["shapley"].values())
    assert total == pytest.approx(row["acc"]["mean"] - 0.1, abs=1e-6)  # prior: 10 balanced
    assert row["missing_rates"] == [0.0, 0.5]


def test_compare_refuses_runs_trained_differently(compared) -> None:
    out, config, _, _ = compared
    again = run_compare_command(
        dataset=None, methods=["joint"], seeds=[0], config=str(config),
        overrides=["optim.lr=0.01"], jobs=1, epochs=None, out=str(out), unimodal=False,
    )  # fmt: skip
    assert again.failures and "different configuration" in again.failures[0][2]


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("fabric.precision=bf16-mixed", "fabric.precision: '32-true' there, 'bf16-mixed' here"),
        ("fabric.devices=2", "fabric.devices: 1 there, 2 here"),
        ("method.hparams.label_smoothing=0.1", "method.hparams.label_smoothing: 0.0 there"),
    ],
)
def test_compare_reuses_only_an_identical_resolved_config(compared, override, names) -> None:
    out, config, _, _ = compared
    again = run_compare_command(
        dataset=None, methods=["joint"], seeds=[0], config=str(config),
        overrides=[override], jobs=1, epochs=None, out=str(out), unimodal=False,
    )  # fmt: skip
    assert again.failures and names in again.failures[0][2], again.failures


def test_a_method_section_for_a_method_not_compared_is_refused(tmp_path: Path) -> None:
    from unipair.errors import ConfigError

    with pytest.raises(ConfigError, match="names 'mla', which this comparison does not run"):
        run_compare_command(
            dataset=None, methods=["joint"], seeds=[0], config="preset:mla_reference",
            overrides=[], jobs=1, epochs=1, out=str(tmp_path), unimodal=False,
        )  # fmt: skip


def test_compare_refuses_runs_on_changed_data(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "mine.npz"
    arrays = {"a": rng.normal(size=(120, 4)), "b": rng.normal(size=(120, 3))}
    np.savez(data, **arrays, label=np.arange(120) % 3)
    args = dict(
        dataset=str(data), methods=["joint"], seeds=[0], config=None, jobs=1, epochs=1,
        out=str(tmp_path / "out"), unimodal=False, overrides=["fabric.accelerator=cpu"],
    )  # fmt: skip
    assert not run_compare_command(**args).failures
    np.savez(data, **{k: v + 1 for k, v in arrays.items()}, label=np.arange(120) % 3)
    again = run_compare_command(**args)
    assert again.failures and "trained on other data" in again.failures[0][2]


def test_aggregate_reports_sample_std() -> None:
    runs = [
        {"label": "x", "seed": s, "summary": {"test": {"acc": a, "f1": a, "acc/u": a},
                                              "train_time_s": 1.0}, "analysis": {}}
        for s, a in enumerate([0.8, 0.9, 1.0])
    ]  # fmt: skip
    row = aggregate(runs)["x"]
    assert row["acc"]["mean"] == pytest.approx(0.9)
    assert row["acc"]["std"] == pytest.approx(math.sqrt(0.01))  # ddof=1


# ---- the report in a real browser ------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium not installed (make test runs scripts/install_chromium.sh; it needs root "
    "or sudo and Debian's apt)",
)
def test_report_renders_in_headless_chromium(compared, tmp_path: Path) -> None:
    out = compared[0]
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'a'}", "--virtual-time-budget=5000",
         "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    marker = 'data-report-check="'
    assert marker in dom.stdout, "the report's self-check did not run"
    raw = dom.stdout.split(marker, 1)[1].split('"', 1)[0].replace("&quot;", '"')
    check = json.loads(raw)
    assert check["images"] >= 4 and check["rendered"] == check["images"], check
    assert check["tables"] >= 4 and check["errors"] == [], check
    console_errors = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln and "rror" in ln]
    assert not console_errors, console_errors
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'b'}", "--window-size=1200,2400",
         f"--screenshot={shot}", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 50_000


def test_variants_layer_over_method_hyperparameters() -> None:
    from unipair.engine.config import ConfigError
    from unipair.evaluation.compare_cli import CompareOptions

    opts = CompareOptions.model_validate({
        "methods": ["pgm", "pgm-no-uni"],
        "hparams": {"pgm": {"lambda_rec": 0.1}},
        "variants": {"pgm-no-uni": {"method": "pgm", "hparams": {"uni_learner": False}}},
    })  # fmt: skip
    assert opts.runs() == [
        ("pgm", "pgm", {"lambda_rec": 0.1}),
        ("pgm-no-uni", "pgm", {"lambda_rec": 0.1, "uni_learner": False}),
    ]
    for bad, message in [
        ({"methods": ["pgn"]}, "unknown method 'pgn'"),
        ({"methods": ["joint"], "hparams": {"jiont": {}}}, "hparams names unknown methods"),
        ({"methods": ["x"], "variants": {"x": {"method": "nope"}}}, "unknown method 'nope'"),
        ({"methods": ["joint"], "variants": {"joint": {"method": "mla"}}}, "not the name"),
        ({"methods": ["joint"], "hparams": {"mla": {"alfa": 1}}}, "unknown key 'alfa'"),
    ]:
        with pytest.raises((ValueError, ConfigError), match=message):
            CompareOptions.model_validate(bad)


# ---- linear probes: one measurement for every method ------------------------------------------
def test_compare_reports_probe_accuracy_and_gap(compared) -> None:
    out, _, first, _ = compared
    for label in ("joint", "ogm_ge", "unimodal:mor"):
        assert "probe_acc" in first.table[label], label
    gap = first.table["joint"]["probe_gap"]["mor"]["mean"]
    inside = first.table["joint"]["probe_acc"]["mor"]["mean"]
    alone = first.table["unimodal:mor"]["probe_acc"]["mor"]["mean"]
    assert gap == pytest.approx(inside - alone)
    md = (out / "results.md").read_text()
    assert "Linear-probe accuracy" in md and "Laziness gap from probes" in md
    assert "own head" in md  # both measurements, clearly named
    probes = json.loads((Path(first.runs[0]["run_dir"]) / "probes.json").read_text())
    assert set(probes["probes"]) == {"pix", "fou", "mor"}


def test_fit_probe_selects_on_validation_and_reads_test_once() -> None:
    import numpy as np

    from unipair.evaluation.probes import fit_probe

    rng = np.random.default_rng(0)

    def split(n: int) -> dict:
        y = rng.integers(0, 3, n)
        x = rng.normal(size=(n, 5)) + np.eye(3, 5)[y] * 2.0
        return {"x": x, "y": y}

    result = fit_probe(split(300), split(100), split(100))
    assert result["acc"] > 0.8 and result["val_acc"] > 0.8 and result["C"] in (0.01, 0.1, 1, 10)
    noise = {"x": rng.normal(size=(300, 5)), "y": rng.integers(0, 3, 300)}
    assert fit_probe(noise, split(100), split(100))["acc"] < 0.6  # nothing to learn


def test_probes_and_compare_jobs_do_not_oversubscribe_blas(monkeypatch, tmp_path) -> None:
    """A probe fits with one BLAS thread and a compare job with its share of the cores. With
    the machine's default (every core, in every job) two jobs' spinning OpenBLAS threads made a
    run's probes 6 to 19x slower and ``make demo`` 3x slower, and the probes' sums (so a cell
    of the table, by up to 0.3 points) depended on the thread count."""
    import numpy as np
    import sklearn.linear_model
    from threadpoolctl import threadpool_info

    from unipair.evaluation import compare
    from unipair.evaluation.probes import fit_probe

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    seen: list[set[int]] = []
    fit = sklearn.linear_model.LogisticRegression.fit

    def recording_fit(self, *args, **kwargs):
        seen.append(blas_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(sklearn.linear_model.LogisticRegression, "fit", recording_fit)
    rng = np.random.default_rng(0)
    split = {"x": rng.normal(size=(60, 4)), "y": rng.integers(0, 3, 60)}
    fit_probe(split, split, split)
    assert seen and all(threads == {1} for threads in seen)

    monkeypatch.setattr(compare, "_execute_run", lambda *args: {"blas": blas_threads()})
    assert compare._execute(None, 3, ()) == {"blas": {3}}  # type: ignore[arg-type]


# ---- the modality gap --------------------------------------------------------------------------
def test_modality_gap_measures_centroid_distance_and_paired_cosine() -> None:
    import numpy as np

    from unipair.evaluation.modality_gap import modality_gap, pca_view

    rng = np.random.default_rng(0)
    same = rng.normal(size=(400, 8))
    aligned = modality_gap({"a": same, "b": 3.0 * same}, {"a": np.arange(400), "b": np.arange(400)})
    assert aligned["pairs"]["a|b"]["distance"] == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert aligned["pairs"]["a|b"]["paired_cosine"] == pytest.approx(1.0)
    e1, e2 = np.eye(8)[[0] * 50], np.eye(8)[[1] * 50]
    apart = modality_gap({"a": e1, "b": e2}, {"a": np.arange(50), "b": np.arange(50)})
    assert apart["mean_distance"] == pytest.approx(np.sqrt(2))
    assert apart["pairs"]["a|b"]["paired_cosine"] == pytest.approx(0.0)
    # paired cosine only over the samples both modalities have
    part = modality_gap({"a": e1, "b": e1[:10]}, {"a": np.arange(50), "b": np.arange(40, 50)})
    assert part["pairs"]["a|b"]["paired_cosine"] == pytest.approx(1.0)
    view = pca_view({"a": same, "b": -same}, rows=30)
    assert {k: np.asarray(v).shape for k, v in view.items()} == {"a": (30, 2), "b": (30, 2)}


def test_compare_reports_the_modality_gap(compared) -> None:
    out, _, first, _ = compared
    gap = first.table["joint"]["modality_gap"]
    assert "own weights" in gap["space"]  # concat fusion: a gap is expected, and said
    assert set(gap["pairs"]) == {"fou|mor", "fou|pix", "mor|pix"}
    assert 0.0 <= gap["mean_distance"]["mean"] <= 2.0
    assert "modality_gap" not in first.table["unimodal:mor"]  # one modality: no gap
    md = (out / "results.md").read_text()
    assert "Modality gap on test" in md
    assert (out / "figures" / "modality_gap.png").is_file()


def test_mla_gap_is_measured_in_its_shared_head_space(tmp_path: Path) -> None:
    import unipair
    from unipair.evaluation.modality_gap import gap_run

    result = unipair.train({
        "dataset": {"name": "handwritten", "options": {"views": ["pix", "mor"]}},
        "method": "mla", "model": {"width": 16}, "train": {"epochs": 1},
        "fabric": {"accelerator": "cpu"}, "logging": {"progress": "none"},
        "out": str(tmp_path), "name": "mla",
    })  # fmt: skip
    gap = gap_run(result.run_dir)
    assert gap is not None and gap["space"].startswith("shared-head input")
    assert set(gap["view"]) == {"pix", "mor"} and len(gap["view"]["pix"]) == 300
    cached = json.loads((result.run_dir / "modality_gap.json").read_text())
    assert cached["gap"]["mean_distance"] == gap["mean_distance"]
