"""Comparison figures (PNG): accuracies, validation curves, robustness, contributions; and
``save_figure``, the one way every figure (these and the per-method reports) reaches disk.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from unipair.evaluation.method_reports import Figure
from unipair.io import atomic_path

__all__ = ["save_figure", "write_figures"]


def _methods(table: dict[str, Any]) -> list[str]:
    return [k for k in table if not k.startswith("unimodal:")]


def _grid(n: int) -> tuple[Any, list[Any]]:
    """A figure with n small panels, four per row."""
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False, constrained_layout=True
    )
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def _panel(ax: Any, title: str, low: float = 0.0) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_ylim(low, 1.01)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)


def save_figure(fig: Any, path: Path) -> Path:
    """Save ``fig`` as a PNG in one rename (a reader never sees half a file) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def modality_accuracy_bars(table: dict[str, Any], modalities: Sequence[str], path: Path) -> Path:
    """Each modality's accuracy inside every method beside it trained alone: one panel for the
    methods' own heads and, when probes were measured, one for the linear probes (the same
    measurement for every method; the own heads are not)."""
    methods = _methods(table)
    groups = [*methods, "alone"] if any(k.startswith("unimodal:") for k in table) else methods
    panels = [("modality_acc", "each method's own head")]
    if any("probe_acc" in table[m] for m in methods):
        panels.append(("probe_acc", "a linear probe on each frozen encoder, same for all"))
    x = np.arange(len(modalities))
    width = 0.8 / max(len(groups), 1)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(max(6, 1.3 * len(modalities) + 2), 3.6 * len(panels)),
        squeeze=False, constrained_layout=True,
    )  # fmt: skip
    for ax, (key, what) in zip(axes[:, 0], panels, strict=True):
        for i, g in enumerate(groups):
            rows = [
                table.get(f"unimodal:{m}", {}) if g == "alone" else table[g] for m in modalities
            ]
            stats = [row.get(key, {}).get(m) for row, m in zip(rows, modalities, strict=True)]
            ax.bar(
                x + (i - (len(groups) - 1) / 2) * width,
                [s["mean"] if s else np.nan for s in stats],
                width,
                yerr=[s["std"] if s else 0.0 for s in stats],
                capsize=2,
                label="trained alone" if g == "alone" else g,
                hatch="//" if g == "alone" else None,
                alpha=0.9,
            )
        ax.set_xticks(x, modalities)
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"Per-modality accuracy: {what} (mean ± std over seeds)", fontsize=10)
        ax.legend(fontsize=8, ncol=min(len(groups), 5), loc="lower right")
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def validation_curves(
    runs: Sequence[dict[str, Any]], modalities: Sequence[str], path: Path
) -> Path:
    keys = ["acc", *modalities]
    fig, axes = _grid(len(keys))
    by_label: dict[str, list[list[dict[str, str]]]] = {}
    for r in runs:
        if r["label"].startswith("unimodal:"):
            continue
        with open(Path(r["run_dir"]) / "metrics.csv", newline="") as f:
            by_label.setdefault(r["label"], []).append(list(csv.DictReader(f)))
    for ax, key in zip(axes, keys, strict=True):
        col = "val/acc" if key == "acc" else f"val/acc/{key}"
        for label, histories in by_label.items():
            n = min(len(h) for h in histories)
            vals = np.array([[float(h[e][col] or "nan") for e in range(n)] for h in histories])
            ax.plot(np.arange(n), np.nanmean(vals, 0), label=label)
        _panel(ax, "fused" if key == "acc" else key)
    axes[0].legend(fontsize=7)
    fig.suptitle("Validation accuracy per epoch (mean over seeds)", fontsize=10)
    fig.supxlabel("epoch", fontsize=8)
    return save_figure(fig, path)


def missing_rate_figure(table: dict[str, Any], path: Path) -> Path:
    methods = [m for m in _methods(table) if "curves" in table[m]]
    modes = list(table[methods[0]]["curves"])
    fig, axes = _grid(len(modes))
    lowest = min(s["mean"] for m in methods for c in table[m]["curves"].values() for s in c)
    floor = max(0.0, np.floor((lowest - 0.05) * 10) / 10)
    for ax, mode in zip(axes, modes, strict=True):
        for m in methods:
            rates = table[m]["missing_rates"]
            mean = np.array([s["mean"] for s in table[m]["curves"][mode]])
            std = np.array([s["std"] for s in table[m]["curves"][mode]])
            ax.plot(rates, mean, marker="o", ms=3, label=m)
            ax.fill_between(rates, mean - std, mean + std, alpha=0.15)
        _panel(ax, "random modalities missing" if mode == "random" else f"{mode} missing", floor)
    axes[0].legend(fontsize=7)
    fig.supxlabel("fraction of test samples missing the modality", fontsize=8)
    fig.supylabel("fused test accuracy", fontsize=8)
    return save_figure(fig, path)


def contributions_figure(table: dict[str, Any], modalities: Sequence[str], path: Path) -> Path:
    methods = [m for m in _methods(table) if "leave_one_out" in table[m]]
    kinds = ["leave_one_out"] + (["shapley"] if all("shapley" in table[m] for m in methods) else [])
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 3.6), squeeze=False)
    x = np.arange(len(modalities))
    width = 0.8 / max(len(methods), 1)
    titles = {
        "leave_one_out": "Accuracy lost when the modality is missing",
        "shapley": "Shapley value of the modality (fused accuracy)",
    }
    for ax, kind in zip(axes.flat, kinds, strict=True):
        for i, m in enumerate(methods):
            stats = [table[m][kind][mod] for mod in modalities]
            ax.bar(
                x + (i - (len(methods) - 1) / 2) * width,
                [100 * s["mean"] for s in stats],
                width,
                yerr=[100 * s["std"] for s in stats],
                capsize=2,
                label=m,
            )
        ax.set_xticks(x, modalities)
        ax.set_title(titles[kind], fontsize=10)
        ax.set_ylabel("fused accuracy points", fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    return save_figure(fig, path)


def modality_gap_figure(runs: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """One 2-D PCA panel per method (its first seed): L2-normalised embeddings coloured by
    modality, the centroid distance in the title."""
    first: dict[str, dict[str, Any]] = {}
    for r in runs:
        gap = r.get("modality_gap")
        if gap and gap.get("view") and not r["label"].startswith("unimodal:"):
            first.setdefault(r["label"], gap)
    if not first:
        return None
    fig, axes = _grid(len(first))
    for ax, (label, gap) in zip(axes, first.items(), strict=True):
        for m, xy in gap["view"].items():
            pts = np.asarray(xy)
            ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.5, label=m)
        ax.set_title(f"{label}: gap {gap['mean_distance']:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=7, markerscale=3)
    return save_figure(fig, path)


def write_figures(
    table: dict[str, Any], runs: Sequence[dict[str, Any]], modalities: Sequence[str], out: Path
) -> list[Figure]:
    out.mkdir(parents=True, exist_ok=True)
    figs = [
        Figure(
            "modality_accuracy",
            modality_accuracy_bars(table, modalities, out / "modality_accuracy.png"),
            "Each modality's accuracy inside every method beside the same modality trained "
            "alone: through each method's own head, and (when measured) through a linear probe "
            "on its frozen encoder, the same measurement for every method (error bars: std "
            "over seeds).",
        ),
        Figure(
            "validation_curves",
            validation_curves(runs, modalities, out / "validation_curves.png"),
            "Validation accuracy per epoch, fused and per modality.",
        ),
    ]
    if any("curves" in table[m] for m in _methods(table)):
        figs += [
            Figure(
                "missing_rate",
                missing_rate_figure(table, out / "missing_rate.png"),
                "Fused accuracy as a modality (or a random one) goes missing from a growing "
                "fraction of test samples.",
            ),
            Figure(
                "contributions",
                contributions_figure(table, modalities, out / "contributions.png"),
                "Modality contributions: accuracy lost without the modality, and Shapley values "
                "when there are at most five modalities.",
            ),
        ]
    gap_png = modality_gap_figure(runs, out / "modality_gap.png")
    if gap_png is not None:
        figs.append(
            Figure(
                "modality_gap",
                gap_png,
                "Modality gap: a 2-D PCA of each method's per-modality embeddings on test "
                "(L2-normalised, first seed), coloured by modality; the table above names each "
                "method's embedding space.",
            )
        )
    return figs
