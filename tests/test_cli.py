"""The command line as a user runs it: commands, clear errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from unipair.cli.main import app

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli")
    res = _invoke("train", "--dataset", "handwritten", "--method", "joint", "--epochs", "2",
                  "--accelerator", "cpu", "--out", str(out), "--name", "r",
                  "--set", "logging.progress=none")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "test metrics" in res.output
    return out / "r"


def test_eval_with_missing_modality(run_dir: Path) -> None:
    full = json.loads(_invoke("eval", str(run_dir), "--json").output)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert full["acc"] == pytest.approx(summary["test"]["acc"])
    res = _invoke("eval", str(run_dir), "--json", "--missing-modality", "fac")  # rate 1
    hidden = json.loads(res.output)
    assert hidden["acc/fac"] != hidden["acc/fac"]  # NaN: never present
    assert hidden["acc/pix"] == pytest.approx(full["acc/pix"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dataset", "handwriting"], "unknown dataset 'handwriting'"),
        (["train", "--method", "mlaa"], "unknown method 'mlaa'"),
        (["train", "--set", "method.hparams.alfa=1", "--method", "ogm_ge"], "unknown key 'alfa'"),
        (["train", "--set", "optim.lr"], "expected key=value"),
        (["train", "--dataset", "missing.npz", "--epochs", "1"], "missing.npz: no such file"),
        (["eval", "/nonexistent/run"], "is not a run directory"),
        (["eval", ".", "--missing-rate", "2"], "--missing-rate must be within [0, 1]"),
        (["datasets", "show", "nope"], "unknown dataset 'nope'"),
        (["train", "--seed", "-1"], "--seed"),
        (["compare", "--seeds", "a,b"], "--seeds: expected comma-separated integers"),
    ],
)
def test_user_errors_are_one_clear_line(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


def test_methods_and_datasets_listings() -> None:
    out = _invoke("methods").output
    for name in ("joint", "ogm_ge", "unimodal", "alpha"):
        assert name in out
    out = _invoke("datasets").output
    assert "handwritten" in out and "1400/200/400" in out
    out = _invoke("datasets", "show", "handwritten").output
    assert "class balance" in out and "fingerprint" in out


def test_no_test_flag_reads_no_test_split(tmp_path: Path) -> None:
    res = _invoke("train", "--dataset", "handwritten", "--epochs", "1", "--no-test",
                  "--accelerator", "cpu", "--out", str(tmp_path), "--name", "r",
                  "--set", "logging.progress=none")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "test split not read" in res.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["test"] is None and summary["val"]["acc"] > 0.5


def test_a_genuine_bug_keeps_its_traceback(monkeypatch) -> None:
    import unipair.engine.trainer as trainer

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug, not a user's mistake")

    monkeypatch.setattr(trainer, "train", bug)
    with pytest.raises(ZeroDivisionError):
        runner.invoke(app, ["train", "--epochs", "1"], catch_exceptions=False)
