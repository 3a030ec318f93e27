"""Two DDP processes on CPU (gloo) against one process at the same global batch size.

Every registered method is checked by the conformance kit (``check_ddp_matches_one_process``,
forked processes on synthetic data). Here: the command line's own launcher (``--strategy
ddp``, separate interpreter processes) on the real handwritten views with uneven process shares,
and BatchNorm encoders, where equality needs ``fabric.sync_batchnorm``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unipair
from unipair.testing import kit_model

PROJECT = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _cli_train(tmp_path: Path, name: str, devices: int, strategy: str) -> list[dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "unipair", "train",
        "--config", str(PROJECT / "configs/handwritten.yaml"),
        "--method", "mla", "--epochs", "2",
        # 59 is odd: every global batch splits 30/29, the last (1400 = 23 * 59 + 43) 22/21
        "--batch-size", "59",
        "--accelerator", "cpu", "--devices", str(devices), "--strategy", strategy,
        "--out", str(tmp_path), "--name", name,
        # dropout draws different masks per process; without it the two runs are comparable
        "--set", "model.encoders={'*': {options: {dropout: 0.0}}}",
        "--set", "logging.progress=plain",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return _rows(tmp_path / name / "metrics.csv")


@pytest.mark.slow
def test_command_line_ddp_matches_one_process_with_uneven_shares(tmp_path: Path) -> None:
    one = _cli_train(tmp_path, "one", 1, "auto")
    two = _cli_train(tmp_path, "two", 2, "ddp")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        assert float(a["val/loss"]) == pytest.approx(float(b["val/loss"]), abs=1e-4)
        assert float(a["train/loss"]) == pytest.approx(float(b["train/loss"]), abs=1e-4)
        for key in [k for k in a if k.startswith("val/acc")]:
            assert abs(float(a[key]) - float(b[key])) <= 1 / 200 + 1e-9, key


def _bn_run(tmp_path: Path, name: str, devices: int, sync: bool) -> list[dict[str, str]]:
    model = kit_model()
    model["encoders"] = {"img": {"name": "cnn", "options": {"channels": [8, 16], "dropout": 0.0}}}
    model["encoders"]["*"] = kit_model()["encoders"]["*"]
    cfg = {
        "dataset": {
            "name": "synthetic",
            "options": {
                "shapes": {"img": [1, 8, 8], "vec": [12]},
                "num_samples": 240,
                "num_classes": 3,
                "noise": 3.0,
                "seed": 2,
            },
        },
        "method": "joint",
        "model": model,
        "train": {"epochs": 2, "batch_size": 37},
        "fabric": {
            "accelerator": "cpu",
            "devices": devices,
            "strategy": "ddp_fork" if devices > 1 else "auto",
            "sync_batchnorm": sync,
        },
        "logging": {"progress": "none"},
        "out": str(tmp_path),
        "name": name,
    }
    return _rows(unipair.train(cfg).run_dir / "metrics.csv")


@pytest.mark.slow
def test_batchnorm_encoders_need_sync_batchnorm_for_equality(tmp_path: Path) -> None:
    one = _bn_run(tmp_path, "one", 1, sync=False)
    synced = _bn_run(tmp_path, "synced", 2, sync=True)
    local = _bn_run(tmp_path, "local", 2, sync=False)
    for a, b in zip(one, synced, strict=True):
        for key in ("train/loss", "val/loss"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-4), key
    # without it each process normalises with its own share's statistics: beyond the tolerance
    gap = max(
        abs(float(a[key]) - float(c[key]))
        for a, c in zip(one, local, strict=True)
        for key in ("train/loss", "val/loss")
    )
    assert gap > 1e-4, gap
