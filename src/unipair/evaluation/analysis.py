"""Per-run robustness and contribution analysis, cached beside the run as ``analysis.json``.

Missing-rate curves: fused test accuracy when each modality (and, separately, random modalities)
is missing from a fraction p of test samples. Missing means ``present=False`` for those rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unipair.evaluation.contributions import leave_one_out, shapley_values
from unipair.evaluation.evaluate import LoadedRun
from unipair.io import write_json

__all__ = ["DEFAULT_RATES", "analyze_run", "missing_rate_curves", "subset_value"]

DEFAULT_RATES = tuple(round(0.1 * i, 1) for i in range(10))
MAX_EXACT_SHAPLEY = 5
ANALYSIS_VERSION = 1


def missing_rate_curves(
    run: LoadedRun, rates: Sequence[float], seed: int = 0
) -> dict[str, list[float]]:
    """modality (or 'random') -> fused test accuracy at each rate."""
    curves: dict[str, list[float]] = {"random": []}
    for p in rates:
        curves["random"].append(run.evaluate("test", float(p), missing_seed=seed)["acc"])
    for m in run.data.spec.names:
        curves[m] = [
            run.evaluate("test", float(p), missing_modality=m, missing_seed=seed)["acc"]
            for p in rates
        ]
    return curves


def subset_value(run: LoadedRun, split: str = "test") -> Any:
    """The value of a set of modalities for contributions: fused accuracy on ``split`` with
    only that set present (the empty set: the majority-class rate)."""
    names = run.data.spec.names
    labels = run.data.split(split).labels.numpy()
    prior = float(np.bincount(labels).max() / len(labels))

    def value(subset: frozenset[str]) -> float:
        if not subset:
            return prior
        hidden = {m: 1.0 for m in names if m not in subset}
        return run.evaluate(split, hidden)["acc"] if hidden else run.evaluate(split)["acc"]

    return value


def analyze_run(run_dir: str | Path, rates: Sequence[float] = DEFAULT_RATES) -> dict[str, Any]:
    """Compute (or read back) the analysis of one finished run."""
    path = Path(run_dir) / "analysis.json"
    key = {"version": ANALYSIS_VERSION, "rates": [float(r) for r in rates]}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached
    run = LoadedRun(run_dir)
    names = run.data.spec.names
    if run.method.modalities != names:  # unimodal runs: only robustness to their own input
        return _store(path, {"key": key, "curves": {}, "leave_one_out": {}, "shapley": None})
    value = subset_value(run)
    result = {
        "key": key,
        "curves": missing_rate_curves(run, rates),
        "leave_one_out": leave_one_out(names, value),
        "shapley": shapley_values(names, value) if len(names) <= MAX_EXACT_SHAPLEY else None,
    }
    return _store(path, result)


def _store(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    write_json(path, result)
    return result
