"""``unipair compare``: every (method, seed) on identical data, splits, encoders and budget.

Each run is an ordinary run directory under ``OUT/runs/<method>/seed<k>``; a finished run is
reused, an interrupted one resumed. Unimodal references (one per modality and seed) give the
"laziness gap": a modality's accuracy inside a method minus its accuracy trained alone.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from unipair.engine.config import RunConfig
from unipair.engine.run_dir import RunDir
from unipair.errors import RunDirError
from unipair.evaluation.analysis import DEFAULT_RATES, analyze_run

__all__ = ["CompareResult", "RunSpec", "aggregate", "plan_runs", "run_compare"]

# parts of a run's config that do not change what is learned
_IRRELEVANT = ("name", "out", "logging", "fabric")


@dataclass(frozen=True)
class RunSpec:
    """One planned run: which method (label), which seed, and its full config."""

    label: str
    seed: int
    config: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        return Path(self.config["out"]) / self.config["name"]


def plan_runs(
    base: RunConfig,
    runs: Sequence[tuple[str, str, dict[str, Any]]],
    seeds: Sequence[int],
    out: str | Path,
    unimodal: bool = True,
    modalities: Sequence[str] = (),
) -> list[RunSpec]:
    """The config of every run: ``runs`` lists (label, method, hyperparameters); with
    ``unimodal`` each modality is also trained alone, under the label ``unimodal:<m>``."""
    runs_root = Path(out) / "runs"
    jobs = list(runs)
    if unimodal:
        jobs += [(f"unimodal:{mod}", "unimodal", {"modality": mod}) for mod in modalities]
    specs = []
    for label, method, hp in jobs:
        for seed in seeds:
            cfg = base.model_copy(deep=True)
            cfg.method = cfg.method.model_validate({"name": method, "hparams": hp})
            cfg.train.seed = int(seed)
            cfg.out = str(runs_root / label.replace(":", "-"))
            cfg.name = f"seed{seed}"
            cfg.logging.progress = "none"
            specs.append(RunSpec(label, int(seed), cfg.model_dump(mode="json")))
    return specs


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in _IRRELEVANT}


def _execute(spec: RunSpec, threads: int, rates: Sequence[float]) -> dict[str, Any]:
    """Worker: train (or resume, or reuse) one run, then analyse it. Returns its summary."""
    import torch

    from unipair.engine.config import load_config
    from unipair.engine.trainer import train

    torch.set_num_threads(threads)
    run = RunDir(spec.run_dir)
    reused = run.is_finished()
    t0 = time.perf_counter()
    if reused:
        pass
    elif run.last.is_file():
        train(RunConfig.model_validate(spec.config), resume=run.path)
    else:
        if run.path.exists():  # started but no epoch finished: start again
            for f in run.path.iterdir():
                f.unlink()
        train(RunConfig.model_validate(spec.config))
    summary = json.loads(run.summary.read_text())
    saved = load_config(run.config).model_dump(mode="json")
    if _comparable(saved) != _comparable(spec.config):
        raise RunDirError(
            f"{run.path} was trained with a different configuration than this comparison; "
            "use another --out directory"
        )
    analysis = analyze_run(run.path, rates)
    return {
        "label": spec.label,
        "seed": spec.seed,
        "run_dir": str(run.path),
        "reused": reused,
        "seconds": time.perf_counter() - t0,
        "summary": summary,
        "analysis": analysis,
    }


@dataclass
class CompareResult:
    out: Path
    runs: list[dict[str, Any]]
    table: dict[str, dict[str, Any]]
    failures: list[tuple[str, int, str]] = field(default_factory=list)


def run_compare(
    specs: Sequence[RunSpec],
    out: str | Path,
    jobs: int = 1,
    rates: Sequence[float] = DEFAULT_RATES,
    on_done: Callable[[dict[str, Any] | None, RunSpec, str | None], None] | None = None,
    threads: int | None = None,
) -> CompareResult:
    """Run every spec (``jobs`` at a time, each in its own process) and aggregate.

    Each run uses ``threads`` torch threads (default: CPU cores // jobs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
    results: list[dict[str, Any]] = []
    failures: list[tuple[str, int, str]] = []

    def record(spec: RunSpec, result: dict[str, Any] | None, error: str | None) -> None:
        if result is not None:
            results.append(result)
        else:
            failures.append((spec.label, spec.seed, error or "failed"))
        if on_done is not None:
            on_done(result, spec, error)

    def attempt(spec: RunSpec) -> None:
        try:
            record(spec, _execute(spec, threads, rates), None)
        except Exception as e:  # keep going: one failed run must not lose the others
            record(spec, None, f"{type(e).__name__}: {e}")
            if os.environ.get("UNIPAIR_DEBUG"):
                traceback.print_exc()

    # finished runs are only read back in this process; the rest train in worker processes
    pending = [s for s in specs if not RunDir(s.run_dir).is_finished()]
    for spec in specs:
        if spec not in pending:
            attempt(spec)
    if jobs <= 1 or len(pending) <= 1:
        for spec in pending:
            attempt(spec)
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_execute, s, threads, rates): s for s in pending}
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    record(spec, fut.result(), None)
                except Exception as e:
                    record(spec, None, f"{type(e).__name__}: {e}")
    order = {(s.label, s.seed): i for i, s in enumerate(specs)}
    results.sort(key=lambda r: order[(r["label"], r["seed"])])
    return CompareResult(out, results, aggregate(results), failures)


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method label: mean and sample std over seeds of every figure we report."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_label.setdefault(r["label"], []).append(r)
    alone: dict[tuple[str, int], float] = {}
    for label, runs in by_label.items():
        if label.startswith("unimodal:"):
            mod = label.split(":", 1)[1]
            for r in runs:
                alone[(mod, r["seed"])] = r["summary"]["test"][f"acc/{mod}"]

    table: dict[str, dict[str, Any]] = {}
    for label, runs in by_label.items():
        tests = [r["summary"]["test"] for r in runs]
        mods = [k.split("/", 1)[1] for k in tests[0] if k.startswith("acc/")]
        row: dict[str, Any] = {
            "seeds": [r["seed"] for r in runs],
            "acc": _stats([t["acc"] for t in tests]),
            "f1": _stats([t["f1"] for t in tests]),
            "train_time_s": _stats([r["summary"]["train_time_s"] for r in runs]),
            "modality_acc": {m: _stats([t[f"acc/{m}"] for t in tests]) for m in mods},
        }
        if len(mods) > 1:
            row["mean_modality_acc"] = _stats(
                [float(np.nanmean([t[f"acc/{m}"] for m in mods])) for t in tests]
            )
            row["laziness_gap"] = {
                m: _stats(
                    [
                        t[f"acc/{m}"] - alone[(m, r["seed"])]
                        for r, t in zip(runs, tests, strict=True)
                        if (m, r["seed"]) in alone
                    ]
                )
                for m in mods
            }
            analyses = [r["analysis"] for r in runs]
            row["leave_one_out"] = {
                m: _stats([a["leave_one_out"].get(m) for a in analyses]) for m in mods
            }
            if all(a.get("shapley") for a in analyses):
                row["shapley"] = {m: _stats([a["shapley"][m] for a in analyses]) for m in mods}
            rates = analyses[0]["key"]["rates"]
            row["missing_rates"] = rates
            row["curves"] = {
                k: [_stats([a["curves"][k][i] for a in analyses]) for i in range(len(rates))]
                for k in analyses[0]["curves"]
            }
        table[label] = row
    return table
