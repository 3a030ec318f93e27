"""Two-process DDP on CPU (gloo) matches one process at the same global batch size."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def _train(
    tmp_path: Path, name: str, devices: int, strategy: str, method: str
) -> list[dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "unipair", "train",
        "--config", str(PROJECT / "configs/handwritten.yaml"),
        "--method", method, "--epochs", "3", "--batch-size", "64",
        "--accelerator", "cpu", "--devices", str(devices), "--strategy", strategy,
        "--out", str(tmp_path), "--name", name,
        # dropout draws different masks per process; without it the two runs are comparable
        "--set", "model.encoders={'*': {options: {dropout: 0.0}}}",
        "--set", "logging.progress=plain",
    ]  # fmt: skip
    if method == "pgm":  # PgM's learners have dropout of their own
        cmd += ["--set", "method.hparams.dropout=0.0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / name / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ogm_ge", "mla", "pgm"])
def test_two_process_ddp_matches_single_process(tmp_path: Path, method: str) -> None:
    one = _train(tmp_path, "one", 1, "auto", method)
    two = _train(tmp_path, "two", 2, "ddp", method)
    assert len(one) == len(two) == 3
    # Same global batches, same gradient (mean of the two halves); only the float summation
    # order differs. Tolerance: 1e-4 on losses, and accuracies equal to within one sample.
    for a, b in zip(one, two, strict=True):
        assert float(a["val/loss"]) == pytest.approx(float(b["val/loss"]), abs=1e-4)
        assert float(a["train/loss"]) == pytest.approx(float(b["train/loss"]), abs=1e-4)
        for key in [k for k in a if k.startswith("val/acc")]:
            assert abs(float(a[key]) - float(b[key])) <= 1 / 200 + 1e-9, key
