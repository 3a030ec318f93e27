"""Linear probes: how much each modality's encoder learned, measured the same way for every
method.

A method's own per-modality accuracy is read from different places (joint's slices of the
fused head, MLA's shared head, PgM's uni heads trained on their own loss), so comparing those
numbers across methods compares unlike things. A probe freezes the finished run's encoder of
modality m, takes its features (``Method.modality_features``) on the rows where m is present,
and fits a multinomial logistic regression on the training split (features standardised on
train), with its regularisation chosen on validation accuracy; the test split is read once, by
the chosen probe. The same probe on a ``unimodal`` run of m gives the reference: the gap is
what m's encoder did not learn inside the multimodal method.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unipair.io import write_json

__all__ = ["PROBE_C", "fit_probe", "fit_probe_on_validation", "probe_features", "probe_run"]

#: inverse regularisation strengths tried (chosen on validation accuracy; ties: the smaller C)
PROBE_C = (0.01, 0.1, 1.0, 10.0)
PROBE_VERSION = 1


def probe_features(run: Any, split: str, batch_size: int = 512) -> dict[str, dict[str, np.ndarray]]:
    """modality -> {"x": features [n, d], "y": labels [n]} over the rows where it is present."""
    return run.per_modality_rows(split, lambda method, batch: method.modality_features(batch))


def fit_probe(
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    grid: Sequence[float] = PROBE_C,
    seed: int = 0,
) -> dict[str, float]:
    """Standardise on train, fit one logistic regression per C, keep the best on validation
    accuracy, and report its test accuracy (read once)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(train["x"])
    xs = {k: scaler.transform(d["x"]) for k, d in (("train", train), ("val", val), ("test", test))}
    fits = []
    # one BLAS thread: small problems, where more threads only contend (with each other and
    # with compare's other jobs); and the fit does not depend on the machine's core count
    with threadpool_limits(limits=1, user_api="blas"):
        for c in grid:
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
            clf.fit(xs["train"], train["y"])
            acc = float((clf.predict(xs["val"]) == val["y"]).mean()) if len(val["y"]) else 0.0
            fits.append((acc, -c, clf))
    val_acc, neg_c, clf = max(fits, key=lambda f: (f[0], f[1]))  # ties: the smaller C
    c = -neg_c
    test_acc = float((clf.predict(xs["test"]) == test["y"]).mean()) if len(test["y"]) else np.nan
    return {"acc": test_acc, "val_acc": val_acc, "C": c, "train_rows": len(train["y"])}


def fit_probe_on_validation(
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    grid: Sequence[float] = PROBE_C,
    seed: int = 0,
) -> dict[str, Any]:
    """The probe for a diagnosis that must not read test: one logistic regression per C, fit
    on train as in :func:`fit_probe`; validation is split into two class-stratified halves and
    each half is scored by the C chosen on the other, so no row scores the probe selected on it
    (an honest validation accuracy, not the optimistic best over the grid)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    y = np.asarray(val["y"])
    n = len(y)
    if n < 2:
        return {"acc": float("nan"), "C": [], "train_rows": len(train["y"]), "val_rows": n}
    scaler = StandardScaler().fit(train["x"])
    x_train, x_val = scaler.transform(train["x"]), scaler.transform(val["x"])
    correct = {}
    # small problems: more BLAS threads only contend with each other (and with other runs)
    with threadpool_limits(limits=1, user_api="blas"):
        for c in grid:
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
            clf.fit(x_train, train["y"])
            correct[c] = clf.predict(x_val) == y
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), y))  # grouped by class, shuffled within each class
    second = np.zeros(n, dtype=bool)
    second[order[1::2]] = True
    hits, chosen = 0, []
    for scored in (~second, second):
        c = max(grid, key=lambda c: (correct[c][~scored].mean(), -c))  # ties: the smaller C
        hits += int(correct[c][scored].sum())
        chosen.append(float(c))
    return {"acc": hits / n, "C": chosen, "train_rows": len(train["y"]), "val_rows": n}


def probe_run(run_dir: str | Path, seed: int = 0) -> dict[str, dict[str, float]]:
    """Probe accuracy per modality of a finished run (cached as ``probes.json`` beside it)."""
    from unipair.evaluation.evaluate import LoadedRun

    path = Path(run_dir) / "probes.json"
    key = {"version": PROBE_VERSION, "grid": list(PROBE_C), "seed": seed}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["probes"]
    run = LoadedRun(run_dir)
    try:
        splits = {s: probe_features(run, s) for s in ("train", "val", "test")}
    except NotImplementedError:
        probes: dict[str, dict[str, float]] = {}
    else:
        probes = {
            m: fit_probe(splits["train"][m], splits["val"][m], splits["test"][m], seed=seed)
            for m in splits["train"]
        }
    write_json(path, {"key": key, "probes": probes})
    return probes
