"""Per-method reports: the registry, `unipair viz` on a real MLA run, the compare report."""

from __future__ import annotations

import ast
import html
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import unipair
from unipair.cli.main import app
from unipair.errors import UnknownNameError
from unipair.evaluation import method_reports
from unipair.evaluation.compare_cli import run_compare_command
from unipair.evaluation.method_reports import (
    Figure,
    get_report,
    has_report,
    method_report,
    methods_with_reports,
    register_report,
)
from unipair.evaluation.reports.mla import fusion_weight_summary
from unipair.methods.registry import list_methods
from unipair.registry import Registry

SRC = Path(__file__).resolve().parents[1] / "src" / "unipair"
PNG = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()

# ---- the registry ----------------------------------------------------------------------------


def test_builtin_reports_register_on_first_lookup() -> None:
    assert methods_with_reports() == ["mla", "pgm"]
    assert has_report("mla") and has_report("pgm") and not has_report("joint")
    with pytest.raises(UnknownNameError) as err:
        get_report("joint")
    assert str(err.value) == "no report for method 'joint'; methods with reports: mla, pgm"


def test_registry_module_loads_the_reports_only_on_lookup() -> None:
    # `import unipair` itself already brings matplotlib (through torchmetrics) and sklearn
    # (splits); the registry adds neither, nor the report modules, until a lookup
    code = (
        "import sys, unipair\n"
        "before = set(sys.modules)\n"
        "from unipair.evaluation import method_reports\n"
        "heavy = ('matplotlib', 'sklearn', 'unipair.evaluation.reports', 'unipair.evaluation.fi')\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(heavy)))\n"
        "method_reports.has_report('mla')\n"
        "print('unipair.evaluation.reports.mla' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"], out.stdout


def _fake_run(path: Path, method: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(f"method: {{name: {method}}}\n")
    return path


def test_method_report_dispatches_on_the_run_method(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(method_reports, "_REPORTS", Registry("method report"))
    calls = []

    @register_report("joint")
    def joint_report(run_dir: Path, out: Path) -> list[Figure]:
        calls.append((run_dir, out))
        return [Figure("x", out / "x.png", "a caption")]

    run = _fake_run(tmp_path / "run", "joint")
    assert method_report(run) == [Figure("x", run / "viz" / "x.png", "a caption")]
    assert calls == [(run, run / "viz")] and (run / "viz").is_dir()
    with pytest.raises(UnknownNameError, match="no report for method 'mla'"):
        method_report(_fake_run(tmp_path / "other", "mla"))


def test_viz_without_a_report_is_one_clear_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["viz", str(_fake_run(tmp_path, "joint"))])
    assert res.exit_code == 2, res.output
    assert "no report for method 'joint'; methods with reports: mla, pgm" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["viz", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "is not a run directory" in res.output


# ---- generic code never names a method -----------------------------------------------------


def _literals(tree: ast.AST) -> list[str]:
    """String constants (f-string parts included) other than docstrings."""
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def test_compare_and_report_name_no_method() -> None:
    # "unimodal" is also the word for the trained-alone references, which these files name
    names = [m for m in list_methods() if m != "unimodal"]
    word = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    report = ast.parse((SRC / "evaluation" / "report.py").read_text())
    compare = ast.parse((SRC / "evaluation" / "compare_cli.py").read_text())
    # the option classes' defaults are the user's default method list, not report code
    functions = [n for n in compare.body if isinstance(n, ast.FunctionDef)]
    assert {f.name for f in functions} >= {"run_compare_command", "_method_figures"}
    found = [s for tree in [report, *functions] for s in _literals(tree) if word.search(s)]
    assert found == []


# ---- a real MLA run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mla_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mla_report")
    return unipair.train({
        "dataset": "handwritten", "method": {"name": "mla"}, "train": {"epochs": 2, "seed": 0},
        "fabric": {"accelerator": "cpu"}, "logging": {"progress": "none"},
        "out": str(out), "name": "run",
    }).run_dir  # fmt: skip


def test_viz_writes_the_mla_fusion_weight_figure(mla_run: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["viz", str(mla_run), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    png = tmp_path / "mla_fusion_weights.png"
    assert res.output.split() == [str(png)]
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    assert not list(tmp_path.glob("*.tmp")), "a temporary file was left behind"


def test_fusion_weight_summary_matches_a_direct_computation(mla_run: Path) -> None:
    with np.load(mla_run / "test_predictions.npz") as z:
        arrays = {k: z[k] for k in z.files}
    names = [k.removeprefix("extra/fusion_weight/") for k in arrays if k.startswith("extra/fu")]
    assert len(names) == 6
    # hide a different third of the samples per modality, so "where present" matters
    rng = np.random.default_rng(0)
    for m in names:
        arrays[f"present/{m}"] = rng.random(len(arrays["labels"])) > 1 / 3
    summary = fusion_weight_summary(arrays)
    weights = np.stack([arrays[f"extra/fusion_weight/{m}"] for m in names], -1)
    winner = weights.argmax(-1)
    for i, m in enumerate(names):
        present = arrays[f"present/{m}"]
        mine = weights[present, i].astype(np.float64)
        assert summary[m]["present"] == pytest.approx(present.mean())
        assert summary[m]["mean"] == pytest.approx(mine.mean())
        assert summary[m]["mean"] != pytest.approx(weights[:, i].mean(), rel=1e-9, abs=0)
        assert summary[m]["std"] == pytest.approx(mine.std())
        assert summary[m]["q50"] == pytest.approx(np.median(mine))
        assert summary[m]["top"] == pytest.approx(np.mean(winner == i))
    # with every view present (as trained), the mean is summary.json's test fusion weight
    full = fusion_weight_summary(mla_run / "test_predictions.npz")
    recorded = json.loads((mla_run / "summary.json").read_text())["test"]
    for m in names:
        assert full[m]["mean"] == pytest.approx(recorded[f"fusion_weight/{m}"], abs=1e-5)
    assert sum(row["top"] for row in full.values()) == pytest.approx(1.0)


# ---- compare ---------------------------------------------------------------------------------

SMALL = """
dataset: {name: handwritten, options: {views: [pix, fou, mor]}}
model: {width: 32}
train: {epochs: 2}
fabric: {accelerator: cpu}
compare:
  missing_rates: [0.0]
  variants: {mla-t2: {method: mla, hparams: {temperature: 2.0}}}
"""


def test_compare_report_shows_each_method_report(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    out = tmp_path / "out"
    # threads=1: compare sets this process's torch threads and keeps them for later tests
    result = run_compare_command(
        dataset=None, methods=["joint", "mla", "mla-t2"], seeds=[1, 0], config=str(config),
        overrides=[], jobs=1, threads=1, epochs=None, out=str(out), unimodal=False,
        command="test",
    )  # fmt: skip
    assert not result.failures
    page = (out / "report.html").read_text()
    for label in ("mla", "mla-t2"):
        png = out / "figures" / label / "mla_fusion_weights.png"
        assert png.read_bytes()[:8] == PNG
        # the lowest seed's run (not the first listed), captioned by the report itself
        first = next(r for r in result.runs if r["label"] == label and r["seed"] == 0)
        (fig,) = get_report("mla")(Path(first["run_dir"]), tmp_path)
        assert html.escape(f"{label} (seed 0): {fig.caption}") in page
    assert page.count("alt='mla_fusion_weights'") == 2
    assert not (out / "figures" / "joint").exists()
