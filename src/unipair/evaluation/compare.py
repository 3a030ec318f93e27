"""``unipair compare``: every (method, seed) on identical data, splits, encoders and budget.

Each run is an ordinary run directory under ``OUT/runs/<method>/seed<k>``; a finished run is
reused only when its whole resolved config (precision and devices included), its data
fingerprint and the hashes of its encoders' weights files match, an interrupted one resumed.
Unimodal references (one per modality and seed) give the "laziness gap": a modality's accuracy
inside a method minus its accuracy trained alone. Auxiliary runs a method declares (UMT's
teachers) are planned too, shared with identical runs (a unimodal teacher is the unimodal
reference), and trained before the runs that need them.
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from unipair.data.dataset import TaskSpec, fingerprint
from unipair.engine.config import MethodConfig, RunConfig
from unipair.engine.provenance import changed_weights
from unipair.engine.run_dir import RunDir
from unipair.errors import RunDirError
from unipair.evaluation.analysis import DEFAULT_RATES, analyze_run
from unipair.evaluation.modality_gap import gap_run
from unipair.evaluation.probes import probe_run
from unipair.io import exclusive_lock

__all__ = [
    "CompareResult",
    "Measure",
    "RunCallback",
    "RunSpec",
    "aggregate",
    "plan_runs",
    "run_compare",
]

#: what another command measures on each finished run in place of compare's analysis and
#: probes (``unipair diagnose``): run directory -> results; a module-level function, since it
#: is sent to the worker processes
Measure = Callable[[Path], dict[str, Any]]
#: called as each run ends: (its result, or None when it failed; its spec; the error or None)
RunCallback = Callable[[dict[str, Any] | None, "RunSpec", str | None], None]


@dataclass(frozen=True)
class RunSpec:
    """One planned run: which method (label), which seed, its full config, and the
    fingerprint of the data it must be trained on."""

    label: str
    seed: int
    config: dict[str, Any]
    data_fingerprint: str = ""

    @property
    def run_dir(self) -> Path:
        return Path(self.config["out"]) / self.config["name"]

    @property
    def needs(self) -> list[str]:
        """Run directories of the auxiliary runs this run depends on."""
        return list(self.config["method"].get("aux", {}).values())


def plan_runs(
    base: RunConfig,
    runs: Sequence[tuple[str, str, dict[str, Any]]],
    seeds: Sequence[int],
    out: str | Path,
    unimodal: bool = True,
    task: TaskSpec | None = None,
    data_fingerprint: str = "",
) -> list[RunSpec]:
    """The config of every run: ``runs`` lists (label, method, hyperparameters); with
    ``unimodal`` each modality of ``task`` is also trained alone, under the label
    ``unimodal:<m>``; auxiliary runs the methods declare are added (see module docstring)."""
    runs_root = Path(out) / "runs"
    jobs = list(runs)
    if unimodal and task is not None:
        jobs += [(f"unimodal:{mod}", "unimodal", {"modality": mod}) for mod in task.names]
    specs = [
        _spec(base, label, method, hp, seed, runs_root, data_fingerprint)
        for label, method, hp in jobs
        for seed in seeds
    ]
    return _with_auxiliary(specs, base, task, runs_root, data_fingerprint) if task else specs


def _spec(
    base: RunConfig,
    label: str,
    method: str,
    hparams: dict[str, Any],
    seed: int,
    runs_root: Path,
    data_fingerprint: str,
) -> RunSpec:
    cfg = base.model_copy(deep=True)
    cfg.method = MethodConfig.model_validate({"name": method, "hparams": hparams})
    cfg.train.seed = int(seed)
    cfg.out = str(runs_root / label.replace(":", "-"))
    cfg.name = f"seed{seed}"
    cfg.logging.progress = "plain"  # one prefixed line per epoch: progress, not silence
    cfg.logging.label = f"{label} seed {seed}"
    return RunSpec(label, int(seed), cfg.model_dump(mode="json"), data_fingerprint)


def _with_auxiliary(
    specs: list[RunSpec], base: RunConfig, task: TaskSpec, runs_root: Path, data_fp: str
) -> list[RunSpec]:
    """Point each run's ``method.aux`` at the runs it needs, planning the missing ones; the
    needed runs come first in the returned list."""
    from unipair.methods.registry import create as create_method

    planned = {json.dumps(_comparable(s.config), sort_keys=True): s for s in specs}
    added: list[RunSpec] = []
    result = []
    for spec in specs:
        cfg = RunConfig.model_validate(spec.config)
        needs = create_method(cfg.method.name, task, cfg.model, cfg.method.hparams).auxiliary_runs()
        if not needs:
            result.append(spec)
            continue
        aux = {}
        for key, req in needs.items():
            hp = dict(req.hparams)
            label = (
                f"unimodal:{hp['modality']}"
                if req.method == "unimodal" and "modality" in hp
                else f"aux:{req.method}-{fingerprint(sorted(hp.items()))[:8]}"
            )
            want = _spec(base, label, req.method, hp, spec.seed, runs_root, data_fp)
            ident = json.dumps(_comparable(want.config), sort_keys=True)
            if ident not in planned:
                planned[ident] = want
                added.append(want)
            aux[key] = str(planned[ident].run_dir)
        cfg.method.aux = aux
        result.append(RunSpec(spec.label, spec.seed, cfg.model_dump(mode="json"), data_fp))
    return added + result


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """What must match for a finished run to be reused: everything but where it lives and
    how progress is shown."""
    out = copy.deepcopy({k: v for k, v in cfg.items() if k not in ("name", "out")})
    for key in ("progress", "label"):
        out.get("logging", {}).pop(key, None)
    return out


def _execute(
    spec: RunSpec, threads: int, rates: Sequence[float], measure: Measure | None = None
) -> dict[str, Any]:
    """Worker: train (or resume, or reuse) one run, then analyse it, with ``threads`` torch
    and BLAS threads (restored afterwards: with one job this runs in the caller's process), so
    that ``jobs`` runs side by side do not oversubscribe the cores."""
    import torch
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            return _execute_run(spec, rates, measure)
    finally:
        torch.set_num_threads(previous)


def _execute_run(
    spec: RunSpec, rates: Sequence[float], measure: Measure | None = None
) -> dict[str, Any]:
    from unipair.engine.config import load_config
    from unipair.engine.trainer import train

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
            f"{run.path} was trained with a different configuration than this comparison "
            f"({_first_difference(_comparable(saved), _comparable(spec.config))}); use "
            "another --out directory"
        )
    if spec.data_fingerprint and summary.get("dataset_fingerprint") != spec.data_fingerprint:
        raise RunDirError(
            f"{run.path} was trained on other data (fingerprint "
            f"{summary.get('dataset_fingerprint')}, now {spec.data_fingerprint}); use another "
            "--out directory"
        )
    if reused and (why := changed_weights(summary.get("weights", {}))):
        raise RunDirError(
            f"{run.path} was trained on other weights ({why}); it is not reused: use another "
            "--out directory, or put the original file back"
        )
    if measure is not None:
        measured = {"measures": measure(run.path)}
    else:
        measured = {
            "analysis": analyze_run(run.path, rates),
            "probes": probe_run(run.path),
            "modality_gap": gap_run(run.path),
        }
    return {
        "label": spec.label,
        "seed": spec.seed,
        "run_dir": str(run.path),
        "reused": reused,
        "seconds": time.perf_counter() - t0,
        "summary": summary,
        **measured,
    }


def _die_with_parent(parent: int) -> None:
    """Worker initializer: a worker ends when the compare process dies, even by ``kill -9``
    (Linux: the kernel's parent-death signal; elsewhere a watcher thread)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    """The first dotted key where two configs differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    return f"{path}: {a!r} there, {b!r} here"


def _phases(specs: Iterable[RunSpec]) -> list[list[RunSpec]]:
    """Runs others depend on first, then the rest (auxiliary runs are never nested)."""
    specs = list(specs)
    needed = {d for s in specs for d in s.needs}
    first = [s for s in specs if str(s.run_dir) in needed]
    return [p for p in (first, [s for s in specs if s not in first]) if p]


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
    on_done: RunCallback | None = None,
    threads: int | None = None,
    measure: Measure | None = None,
) -> CompareResult:
    """Run every spec (``jobs`` at a time, each in its own process) and aggregate.

    Each run uses ``threads`` torch threads (default: CPU cores // jobs). With ``measure``, each
    result holds ``measure(run_dir)`` under "measures" instead of compare's analysis, and
    nothing is aggregated (the caller does)."""
    with exclusive_lock(out, "compare"):  # a second compare on OUT stops with a clear error
        return _run_locked(specs, Path(out), jobs, rates, on_done, threads, measure)


def _run_locked(
    specs: Sequence[RunSpec],
    out: Path,
    jobs: int,
    rates: Sequence[float],
    on_done: RunCallback | None,
    threads: int | None,
    measure: Measure | None = None,
) -> CompareResult:
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
            record(spec, _execute(spec, threads, rates, measure), None)
        except Exception as e:  # keep going: one failed run must not lose the others
            record(spec, None, f"{type(e).__name__}: {e}")
            if os.environ.get("UNIPAIR_DEBUG"):
                traceback.print_exc()

    # finished runs are only read back in this process; the rest train in worker processes
    pending = [s for s in specs if not RunDir(s.run_dir).is_finished()]
    for spec in specs:
        if spec not in pending:
            attempt(spec)
    for phase in _phases(pending):
        if jobs <= 1 or len(phase) <= 1:
            for spec in phase:
                attempt(spec)
            continue
        with ProcessPoolExecutor(
            jobs,
            mp_context=get_context("spawn"),
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {pool.submit(_execute, s, threads, rates, measure): s for s in phase}
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    record(spec, fut.result(), None)
                except Exception as e:
                    record(spec, None, f"{type(e).__name__}: {e}")
    order = {(s.label, s.seed): i for i, s in enumerate(specs)}
    results.sort(key=lambda r: order[(r["label"], r["seed"])])
    table = aggregate(results) if measure is None else {}
    return CompareResult(out, results, table, failures)


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
    alone_probe: dict[tuple[str, int], float] = {}
    for label, runs in by_label.items():
        if label.startswith("unimodal:"):
            mod = label.split(":", 1)[1]
            for r in runs:
                alone[(mod, r["seed"])] = r["summary"]["test"][f"acc/{mod}"]
                if mod in r.get("probes", {}):
                    alone_probe[(mod, r["seed"])] = r["probes"][mod]["acc"]

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
        probed = [m for m in mods if all(m in r.get("probes", {}) for r in runs)]
        if probed:
            row["probe_acc"] = {m: _stats([r["probes"][m]["acc"] for r in runs]) for m in probed}
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
            if probed and alone_probe:
                row["probe_gap"] = {
                    m: _stats(
                        [
                            r["probes"][m]["acc"] - alone_probe[(m, r["seed"])]
                            for r in runs
                            if (m, r["seed"]) in alone_probe
                        ]
                    )
                    for m in probed
                }
            gaps = [r.get("modality_gap") for r in runs]
            if gaps and all(gaps):
                row["modality_gap"] = {
                    "space": gaps[0]["space"],
                    "mean_distance": _stats([g["mean_distance"] for g in gaps]),
                    "pairs": {
                        pair: {
                            k: _stats([g["pairs"][pair].get(k) for g in gaps])
                            for k in ("distance", "paired_cosine")
                        }
                        for pair in gaps[0]["pairs"]
                    },
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
