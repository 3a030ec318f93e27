"""The MLA report: how the test-time fusion shares the decision among the modalities.

``summary.json`` keeps only the mean fusion weight per modality, which hides whether one
modality always wins or the weight moves from sample to sample. ``fusion_weight_summary`` and
the figure ``mla_fusion_weights.png`` read every test sample's weight from the run's
``test_predictions.npz`` (``extra/fusion_weight/<m>``, ``present/<m>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from unipair.errors import RunDirError
from unipair.evaluation.figures import save_figure
from unipair.evaluation.method_reports import Figure, register_report

__all__ = ["fusion_weight_summary", "mla_report"]

_PREFIX = "extra/fusion_weight/"


def _arrays(predictions: str | Path | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(predictions, (str, Path)):
        with np.load(predictions) as z:
            return {k: z[k] for k in z.files}
    return dict(predictions)


def _weights(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality: every sample's fusion weight and whether the modality was present."""
    names = [k.removeprefix(_PREFIX) for k in arrays if k.startswith(_PREFIX)]
    if not names:
        raise KeyError("no fusion weights in these predictions (keys 'extra/fusion_weight/<m>')")
    out = {}
    for m in names:
        w = arrays[_PREFIX + m].astype(np.float64)
        out[m] = (w, arrays.get(f"present/{m}", np.ones_like(w, dtype=bool)).astype(bool))
    return out


def fusion_weight_summary(
    predictions: str | Path | Mapping[str, np.ndarray],
    quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
) -> dict[str, dict[str, float]]:
    """Per modality: the fusion weight's mean, std and quantiles over the samples where it is
    present, its mean over all samples (0 where missing), and how often it has the top weight.

    ``predictions`` is a run's ``test_predictions.npz`` (or its arrays).
    """
    weights = _weights(_arrays(predictions))
    top = np.stack([w for w, _ in weights.values()], axis=-1).argmax(-1)
    out: dict[str, dict[str, float]] = {}
    for i, (m, (w, present)) in enumerate(weights.items()):
        wp = w[present]
        row = {
            "present": float(present.mean()),
            "mean_all": float(w.mean()),
            "mean": float(wp.mean()) if wp.size else float("nan"),
            "std": float(wp.std()) if wp.size else float("nan"),
            "top": float((top == i).mean()),
        }
        for q in quantiles:
            row[f"q{round(100 * q):02d}"] = float(np.quantile(wp, q)) if wp.size else float("nan")
        out[m] = row
    return out


@register_report("mla")
def mla_report(run_dir: Path, out: Path) -> list[Figure]:
    """Write ``mla_fusion_weights.png``: one histogram of the per-sample weight per modality."""
    path = run_dir / "test_predictions.npz"
    if not path.is_file():
        raise RunDirError(
            f"{path} does not exist: the run has not finished or was trained with "
            "logging.save_predictions=false"
        )
    arrays = _arrays(path)
    weights = _weights(arrays)
    summary = fusion_weight_summary(arrays)
    cols = min(len(weights), 3)
    rows = -(-len(weights) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False, sharex=True
    )
    largest = max((float(w[p].max()) for w, p in weights.values() if p.any()), default=1.0)
    bins = np.linspace(0.0, min(1.0, max(0.1, np.ceil(10 * largest) / 10)), 41)
    equal = 1.0 / len(weights)
    for ax, (m, (w, present)) in zip(axes.flat, weights.items(), strict=False):
        row = summary[m]
        ax.hist(w[present], bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(row["mean"], color="black", lw=1.5, label=f"mean {row['mean']:.2f}")
        ax.axvline(equal, color="grey", ls="--", lw=1, label=f"equal 1/{len(weights)}")
        ax.set_title(f"{m}: top weight in {100 * row['top']:.0f}% of samples", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(weights) :]:
        ax.axis("off")
    fig.supxlabel("fusion weight of the modality (test samples where it is present)", fontsize=8)
    fig.supylabel("samples", fontsize=8)
    fig.suptitle("MLA test-time fusion weights per sample", fontsize=10)
    fig.tight_layout()
    return [
        Figure(
            "mla_fusion_weights",
            save_figure(fig, out / "mla_fusion_weights.png"),
            "Distribution of each modality's per-sample fusion weight over the test samples "
            "where it is present (black line: mean; dashed: equal weights), and the share of "
            "samples where the modality has the largest weight.",
        )
    ]
