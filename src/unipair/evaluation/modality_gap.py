"""The modality gap: how far apart the modalities' embeddings sit, as the MLA paper analyses.

Following Liang et al. (NeurIPS 2022, "Mind the Gap"), each embedding is L2-normalised and the
gap between modalities m and n is the distance between their centroids,
||mean_i e_m(i)/|e_m(i)| - mean_j e_n(j)/|e_n(j)|||, from 0 (the same mean direction) to 2
(opposite). Alongside it, the mean cosine between the two modalities' embeddings of the *same*
sample (paired cosine) and a 2-D PCA view of a subsample. Embeddings are each method's
``shared_embeddings`` on the test split (the method states what they are in
``embedding_space``); nothing is selected on them. Where each modality is read by its own
weights (concat fusion), a gap is expected and says nothing against the method: the report
prints the space next to the number.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from unipair.io import write_json

__all__ = ["gap_run", "modality_gap", "pca_view"]

GAP_VERSION = 1
#: rows per modality kept for the 2-D view (the gap itself uses every test row)
VIEW_ROWS = 300


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def modality_gap(
    embeddings: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Centroid distance of L2-normalised embeddings for every pair of modalities, their mean,
    and (given each embedding's sample ``rows``) the mean cosine over samples with both."""
    unit = {m: _normalise(x) for m, x in embeddings.items() if len(x)}
    pairs: dict[str, dict[str, float]] = {}
    for m, n in itertools.combinations(sorted(unit), 2):
        pair: dict[str, float] = {
            "distance": float(np.linalg.norm(unit[m].mean(0) - unit[n].mean(0)))
        }
        if rows is not None:
            common, im, jn = np.intersect1d(rows[m], rows[n], return_indices=True)
            if len(common):
                pair["paired_cosine"] = float((unit[m][im] * unit[n][jn]).sum(1).mean())
        pairs[f"{m}|{n}"] = pair
    distances = [p["distance"] for p in pairs.values()]
    return {"pairs": pairs, "mean_distance": float(np.mean(distances)) if distances else None}


def pca_view(
    embeddings: Mapping[str, np.ndarray], rows: int = VIEW_ROWS, seed: int = 0
) -> dict[str, list[list[float]]]:
    """A 2-D PCA of the L2-normalised embeddings of every modality together (a seeded
    subsample of ``rows`` per modality), for the report's scatter plot."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    picked = {}
    for m, x in embeddings.items():
        if len(x):
            keep = np.sort(rng.choice(len(x), size=min(rows, len(x)), replace=False))
            picked[m] = _normalise(x[keep])
    if not picked:
        return {}
    stacked = np.concatenate(list(picked.values()))
    if stacked.shape[0] < 2 or stacked.shape[1] < 2:
        return {}
    xy = PCA(n_components=2, random_state=seed).fit_transform(stacked)
    out, start = {}, 0
    for m, x in picked.items():
        out[m] = np.round(xy[start : start + len(x)], 5).tolist()
        start += len(x)
    return out


def gap_run(run_dir: str | Path) -> dict[str, Any] | None:
    """The modality gap of a finished run on its test split (cached as ``modality_gap.json``
    beside it); None when the method exposes no per-modality embeddings or has one modality."""
    from unipair.evaluation.evaluate import LoadedRun

    path = Path(run_dir) / "modality_gap.json"
    key = {"version": GAP_VERSION, "view_rows": VIEW_ROWS}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["gap"]
    run = LoadedRun(run_dir)
    found = run.per_modality_rows("test", lambda method, batch: method.shared_embeddings(batch))
    gap: dict[str, Any] | None = None
    widths = {v["x"].reshape(len(v["x"]), -1).shape[1] for v in found.values()}
    if len(found) >= 2 and len(widths) == 1:
        emb = {m: v["x"] for m, v in found.items()}
        gap = {
            **modality_gap(emb, {m: v["row"] for m, v in found.items()}),
            "space": run.method.embedding_space,
            "view": pca_view(emb),
        }
    write_json(path, {"key": key, "gap": gap})
    return gap
