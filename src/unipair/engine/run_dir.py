"""The files of one run: config.yaml, metrics.csv, checkpoints, summary.json."""

from __future__ import annotations

import csv
import io
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from unipair.io import write_json, write_text

__all__ = ["RunDir", "RunResult", "environment_info"]


@dataclass
class RunResult:
    """What ``unipair.train`` returns: where the run lives and what it measured."""

    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def test(self) -> dict[str, float]:
        return self.summary["test"]

    @property
    def val(self) -> dict[str, float]:
        return self.summary["val"]


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.csv")
    summary = property(lambda self: self.path / "summary.json")
    last = property(lambda self: self.path / "last.ckpt")
    best = property(lambda self: self.path / "best.ckpt")
    predictions = property(lambda self: self.path / "test_predictions.npz")

    def is_finished(self) -> bool:
        return self.summary.is_file()

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
        write_text(self.metrics, buf.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary, summary)


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def default_run_name(dataset: str, method: str, seed: int) -> str:
    """``<dataset>-<method>-s<seed>-<time>``; a dataset given as a path (an .npz, a manifest,
    a prepared folder) by its last part: the whole path would put the run beside the data,
    outside ``out``."""
    return f"{Path(dataset).stem}-{method}-s{seed}-{datetime.now():%Y%m%d-%H%M%S-%f}"


def environment_info() -> dict[str, Any]:
    import torch

    try:
        version = metadata.version("unipair")
    except metadata.PackageNotFoundError:
        version = "unknown"
    info = {"unipair_version": version, "torch_version": torch.__version__, "git_commit": None}
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=here,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            info["git_commit"] = out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info
