"""The PgM report: where a finished run's uni and paired parts lie, how large each part is,
and how well each modality's uni head does next to the fused prediction.

``pgm_report(run_dir, out)`` rebuilds the run's data and method from ``config.yaml``, loads
``best.ckpt`` (the weights the test metrics come from) and writes three PNGs:

* ``pgm_tsne.png``: per modality, a 2-D t-SNE of u_m and p_m on the test split, coloured by
  class, marker by part (o: uni, x: paired); the t-SNEs share a budget of ``max_points`` points
  so the whole call stays a few seconds.
* ``pgm_partition.png``: uni / paired share per modality (the fixed rho for ``split``, the
  learned mean gate for ``soft``, with rho marked).
* ``pgm_accuracy.png``: each modality's uni-head accuracy, the paired head's and the fused one.
* ``pgm_parts.png``: what each part carries: the fused test accuracy lost when a modality's
  learned uni part, or its paired part, is zeroed before the decoder and the task head, and the
  *functional* uni share drop_uni / (drop_uni + drop_paired) (:func:`part_shares`).

``pgm_distribution(run_dirs, out)`` draws the functional and the gate shares of several PgM
runs (datasets, tasks) side by side: ``unipair viz RUN1 RUN2 ...``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from unipair.evaluation.evaluate import LoadedRun
from unipair.evaluation.figures import save_figure
from unipair.evaluation.method_reports import Figure, register_comparison, register_report

__all__ = ["collect_pgm_outputs", "part_shares", "pgm_distribution", "pgm_report"]


@torch.no_grad()
def collect_pgm_outputs(method, dataset, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Pooled u_m, p_m, gates and every head's logits over a dataset, as numpy arrays."""
    from unipair.models.pgm import pool

    chunks: dict[str, list[np.ndarray]] = {}

    def keep(key: str, t: torch.Tensor) -> None:
        t = t.detach().cpu()
        chunks.setdefault(key, []).append((t.float() if t.is_floating_point() else t).numpy())

    for start in range(0, len(dataset), batch_size):
        rows = list(range(start, min(start + batch_size, len(dataset))))
        batch = dataset.__getitems__(rows)
        out = method.pgm(batch.inputs, batch.present)
        keep("labels", batch.labels)
        keep("logits", out.logits)
        if out.paired_logits is not None:
            keep("paired_logits", out.paired_logits)
        for m in method.modalities:
            keep(f"present/{m}", batch.present[m])
            keep(f"u/{m}", pool(out.uni[m]))
            keep(f"p/{m}", pool(out.paired[m]))
            if m in out.uni_logits:
                keep(f"uni_logits/{m}", out.uni_logits[m])
        for m, s in method.pgm.uni_share(out).items():
            keep(f"share/{m}", s)
    return {k: np.concatenate(v) for k, v in chunks.items()}


@torch.no_grad()
def part_shares(method, dataset, batch_size: int = 512) -> dict[str, dict[str, float]]:
    """Fused accuracy with each learned part zeroed, per modality (and for all modalities at
    once, key ``"*"``): ``uni_drop``, ``paired_drop`` (accuracy lost) and the functional uni
    share ``uni_drop / (uni_drop + paired_drop)`` (NaN when the two removals together cost
    less than one point of accuracy: too little to split between the parts).

    The gate of a soft partitioner is not identifiable on its own (the encoder can rescale
    h to undo it), so what each part is *used for* is measured by removing it.
    """
    mods = list(method.modalities)
    variants: dict[str, tuple[str, ...]] = {
        "full": (),
        "-uni/*": ("uni",),
        "-paired/*": ("paired",),
    }
    for m in mods:
        variants[f"-uni/{m}"] = (f"uni/{m}",)
        variants[f"-paired/{m}"] = (f"paired/{m}",)
    hits = dict.fromkeys(variants, 0)
    total = 0
    method.eval()
    for start in range(0, len(dataset), batch_size):
        batch = dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset)))))
        h = method.pgm.encode(batch.inputs, batch.present, batch.valid)
        for key, drop in variants.items():
            logits = method.pgm.from_features(h, batch.present, drop).logits
            hits[key] += int((logits.argmax(1) == batch.labels).sum())
        total += len(batch)
    acc = {k: v / max(total, 1) for k, v in hits.items()}
    out = {}
    for m in [*mods, "*"]:
        du = acc["full"] - acc[f"-uni/{m}"]
        dp = acc["full"] - acc[f"-paired/{m}"]
        positive = max(du, 0.0) + max(dp, 0.0)
        share = max(du, 0.0) / positive if positive >= 0.01 else float("nan")
        out[m] = {"uni_drop": du, "paired_drop": dp, "share": share, "acc": acc["full"]}
    return out


def _gate_shares(method, arrays: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        m: float(arrays[f"share/{m}"][arrays[f"present/{m}"]].mean())
        if f"share/{m}" in arrays
        else float("nan")
        for m in method.modalities
    }


@register_comparison("pgm")
def pgm_distribution(run_dirs: list[Path], out: Path) -> Figure:
    """The functional uni share (bars) and the gate share (marks) per modality of several PgM
    runs side by side, e.g. one per dataset or per task of a family."""
    fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(run_dirs) * 2, 3.8))
    x0, ticks, names = 0.0, [], []
    below = ax.get_xaxis_transform()  # x in data units, y in axes units: under the ticks
    for run_dir in run_dirs:
        run = LoadedRun(run_dir)
        shares = part_shares(run.method, run.data.test)
        gates = _gate_shares(run.method, collect_pgm_outputs(run.method, run.data.test))
        mods = list(run.method.modalities)
        xs = x0 + np.arange(len(mods))
        ax.bar(xs, [shares[m]["share"] for m in mods], color="tab:blue", width=0.7)
        ax.scatter(xs, [gates[m] for m in mods], marker="_", s=300, color="k", zorder=3)
        ticks += list(xs)
        names += mods
        ax.text(xs.mean(), -0.14, Path(run_dir).name, transform=below, ha="center", fontsize=7)
        x0 = xs[-1] + 2.0
    ax.set_xticks(ticks, names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("uni-modal share")
    ax.set_title("functional uni share (bars: accuracy lost without u vs without p); gate (—)")
    fig.tight_layout()
    return Figure(
        "pgm_distribution",
        save_figure(fig, out / "pgm_distribution.png"),
        "Uni-modal vs paired-modal share of each modality across PgM runs: bars are the "
        "functional share (test accuracy lost when the uni part is removed, over the loss for "
        "both parts; none where both cost less than one point), marks the partitioner's gate "
        "share.",
    )


def _acc(logits: np.ndarray, labels: np.ndarray, rows: np.ndarray | None = None) -> float:
    if rows is not None:
        logits, labels = logits[rows], labels[rows]
    return float((logits.argmax(1) == labels).mean()) if len(labels) else float("nan")


@register_report("pgm")
def pgm_report(run_dir: Path, out: Path, *, max_points: int = 1000, seed: int = 0) -> list[Figure]:
    """Write the three PgM figures of a finished run into ``out``."""
    from sklearn.manifold import TSNE  # slow to import; only this report needs it

    run = LoadedRun(run_dir)
    method, data, cfg = run.method, run.data, run.config
    arrays = collect_pgm_outputs(method, data.test)
    mods = list(method.modalities)
    labels = arrays["labels"]
    classes = data.spec.num_classes
    rng = np.random.default_rng(seed)
    figures: list[Figure] = []

    # 1. t-SNE of u_m and p_m per modality, on a shared point budget
    per_mod = max(10, max_points // (2 * len(mods)))
    cols = min(3, len(mods))
    nrows = -(-len(mods) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.8 * nrows), squeeze=False)
    cmap = plt.get_cmap("tab10" if classes <= 10 else "tab20")
    for ax, m in zip(axes.flat, mods, strict=False):
        rows = np.flatnonzero(arrays[f"present/{m}"])
        rows = rng.choice(rows, size=min(per_mod, len(rows)), replace=False)
        u, p = arrays[f"u/{m}"][rows], arrays[f"p/{m}"][rows]
        pts = np.concatenate([u, p])
        if len(pts) >= 5:
            perplexity = float(min(30.0, (len(pts) - 1) / 3))
            emb = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(pts)
            n = len(rows)
            for part, sl, marker in (("uni", slice(0, n), "o"), ("paired", slice(n, None), "x")):
                ax.scatter(
                    emb[sl, 0],
                    emb[sl, 1],
                    c=[cmap(int(c) % cmap.N) for c in labels[rows]],
                    marker=marker,
                    s=14,
                    linewidths=0.8,
                    alpha=0.8,
                    label=part,
                )
        ax.set_title(f"{m}: u (o) and p (x)")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(mods) :]:
        ax.axis("off")
    fig.suptitle(f"PgM partitions on the test split ({cfg.method.hparams.partition})")
    fig.tight_layout()
    figures.append(
        Figure(
            "pgm_tsne",
            save_figure(fig, out / "pgm_tsne.png"),
            "t-SNE of each modality's uni-modal (o) and paired-modal (x) features on the test "
            "split, coloured by class.",
        )
    )

    # 2. uni / paired share per modality
    hp = method.hparams
    share = {
        m: float(arrays[f"share/{m}"][arrays[f"present/{m}"]].mean())
        if f"share/{m}" in arrays
        else float("nan")
        for m in mods
    }
    fig, (ax, ax_dims) = plt.subplots(
        1, 2, figsize=(1.2 * len(mods) + 7.5, 3.6), gridspec_kw={"width_ratios": [3, 2]}
    )
    x = np.arange(len(mods))
    uni = np.array([share[m] for m in mods])
    if np.isnan(uni).all():  # no partitioner: u = p = h
        ax.text(0.5, 0.5, "no partitioner: u = p = h", ha="center", transform=ax.transAxes)
        uni = np.zeros(len(mods))
    ax.bar(x, uni, color="tab:blue", label="uni-modal")
    ax.bar(x, 1 - uni, bottom=uni, color="tab:orange", label="paired-modal")
    rho = method.pgm.rho
    ax.scatter(x, [rho[m] for m in mods], marker="_", s=400, color="k", label="rho (target)")
    ax.set_xticks(x, mods)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of the feature")
    title = "learned mean gate" if hp.partition == "soft" else f"partition: {hp.partition}"
    ax.set_title(f"uni / paired share per modality ({title})")
    ax.legend(loc="upper right", fontsize=8)
    # the gate per feature dimension (sorted): a step for split, learned curves for soft
    for m in mods:
        part = method.pgm.partitioners[m]
        if part.mode == "soft":
            gate = torch.sigmoid(part.logits.detach()).cpu().numpy()
        elif part.mode == "split":
            gate = part.mask.cpu().numpy()
        else:
            continue
        ax_dims.plot(np.linspace(0, 1, len(gate)), np.sort(gate)[::-1], label=m)
    ax_dims.set_xlabel("feature dimension (sorted, fraction of d)")
    ax_dims.set_ylabel("uni-modal gate")
    ax_dims.set_ylim(-0.03, 1.03)
    ax_dims.set_title("gate per dimension (static part)")
    if ax_dims.lines:
        ax_dims.legend(fontsize=7)
    fig.tight_layout()
    figures.append(
        Figure(
            "pgm_partition",
            save_figure(fig, out / "pgm_partition.png"),
            "Uni-modal vs paired-modal share of each modality (rho marked), and the uni-modal "
            "gate per feature dimension.",
        )
    )

    # 3. uni-head accuracy per modality next to the paired and fused accuracy
    names, values, colors = [], [], []
    for m in mods:
        if f"uni_logits/{m}" in arrays:
            names.append(f"uni:{m}")
            values.append(_acc(arrays[f"uni_logits/{m}"], labels, arrays[f"present/{m}"]))
            colors.append("tab:blue")
    if "paired_logits" in arrays:
        names.append("paired")
        values.append(_acc(arrays["paired_logits"], labels))
        colors.append("tab:orange")
    names.append("fused")
    values.append(_acc(arrays["logits"], labels))
    colors.append("tab:green")
    fig, ax = plt.subplots(figsize=(0.9 * len(names) + 2.5, 3.6))
    bars = ax.bar(np.arange(len(names)), values, color=colors)
    for bar, v in zip(bars, values, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, v + 0.01, f"{v:.3f}", ha="center", fontsize=8)
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.set_title("uni heads vs fused (test split, best checkpoint)")
    fig.tight_layout()
    figures.append(
        Figure(
            "pgm_accuracy",
            save_figure(fig, out / "pgm_accuracy.png"),
            "Each modality's uni-head accuracy beside the paired head and the fused prediction "
            "(test split, best checkpoint).",
        )
    )

    # 4. what each part carries: accuracy lost without it, and the functional share
    shares = part_shares(method, data.test)
    keys = [*mods, "*"]
    fig, ax = plt.subplots(figsize=(1.2 * len(keys) + 2.5, 3.6))
    x = np.arange(len(keys))
    ax.bar(x - 0.2, [100 * shares[k]["uni_drop"] for k in keys], 0.4, label="without uni part")
    ax.bar(x + 0.2, [100 * shares[k]["paired_drop"] for k in keys], 0.4,
           label="without paired part")  # fmt: skip
    for xi, k in zip(x, keys, strict=True):
        share = shares[k]["share"]
        if np.isfinite(share):
            ax.text(xi, ax.get_ylim()[1] * 0.95, f"uni {share:.2f}", ha="center", fontsize=8)
    ax.set_xticks(x, [k if k != "*" else "all" for k in keys])
    ax.set_ylabel("fused test accuracy lost (points)")
    ax.set_title("what each part carries (parts zeroed before decoder and task head)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    figures.append(
        Figure(
            "pgm_parts",
            save_figure(fig, out / "pgm_parts.png"),
            "Fused test accuracy lost when a modality's learned uni part or paired part is zeroed "
            "(all: every modality's); 'uni' is the functional share drop_uni / (drop_uni + "
            "drop_paired).",
        )
    )
    return figures
