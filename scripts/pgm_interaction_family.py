"""PgM across the interaction task family: does its uni/paired share follow the task?

For each mixing weight w (0: per-modality evidence only, 1: a pure cross-modal product; see
``configs/interaction.yaml``) and seed, trains joint and PgM variants under the same protocol
and measures on test (each run's epoch chosen on validation):

* fused accuracy, and the paired head's accuracy (PgM),
* the *functional* uni share: accuracy lost when every modality's uni part is zeroed, over
  the loss for the uni part plus that for the paired part (``reports.pgm.part_shares``),
* the gate share (mean gate: the share the partitioner *gave* the uni part; for ``split`` the
  configured rho, for ``share_from: heldout`` the share measured on the held-out part).

Writes ``<out>/family.json`` and ``docs/figures/pgm_interaction_family.png`` and prints a
markdown table (mean ± sd over seeds). Finished runs are reused.

    python scripts/pgm_interaction_family.py --jobs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: name -> (method, hyperparameter overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "joint": ("joint", []),
    "pgm": ("pgm", []),
    "pgm soft": ("pgm", ["partition=soft", "lambda_prior=0.0", "lr_mult={'*': {partitioner: 30}}"]),
    "pgm measured share": ("pgm", ["share_from=heldout"]),
    "pgm soft measured share": ("pgm", ["partition=soft", "share_from=heldout"]),
    "pgm 1 token": ("pgm", ["paired_tokens=1"]),
    "pgm no decoder": ("pgm", ["decoder=false"]),
}


def measure(job: tuple[str, float, int, str]) -> dict:
    """Train (or reuse) one run and measure it on test."""
    variant, weight, seed, out = job
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import unipair
    from unipair.engine.config import load_config
    from unipair.evaluation.evaluate import LoadedRun

    method, hparams = VARIANTS[variant]
    name = f"w{weight:.2f}-{variant.replace(' ', '_')}-s{seed}"
    run_dir = Path(out) / name
    if not (run_dir / "summary.json").is_file():
        overrides = [
            f"method.name={method}",
            f"dataset.options.weight={weight}",
            f"dataset.options.seed={seed}",
            f"train.seed={seed}",
            f"out={out}",
            f"name={name}",
            "logging.progress=none",
            *(f"method.hparams.{kv}" for kv in hparams),
        ]
        unipair.train(load_config(ROOT / "configs" / "interaction.yaml", overrides))
    summary = json.loads((run_dir / "summary.json").read_text())
    row = {"variant": variant, "weight": weight, "seed": seed, "acc": summary["test"]["acc"]}
    if method == "pgm":
        from unipair.evaluation.reports.pgm import collect_pgm_outputs, part_shares

        run = LoadedRun(run_dir)
        arrays = collect_pgm_outputs(run.method, run.data.test)
        row["paired_acc"] = float((arrays["paired_logits"].argmax(1) == arrays["labels"]).mean())
        shares = part_shares(run.method, run.data.test)["*"]
        row.update(uni_drop=shares["uni_drop"], paired_drop=shares["paired_drop"])
        row["functional_share"] = shares["share"]
        row["gate_share"] = float(
            np.mean([arrays[f"share/{m}"].mean() for m in run.method.modalities])
        )
    return row


def _pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    values = [v for v in values if v == v]  # NaN: neither part mattered
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.fmean(values):.{digits}f} ± {scale * sd:.{digits}f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| w | variant | fused acc % | paired head % | functional uni share | gate share |",
        "|---|---|---|---|---|---|",
    ]
    for w in WEIGHTS:
        for variant in VARIANTS:
            got = [r for r in rows if r["weight"] == w and r["variant"] == variant]
            if not got:
                continue

            def col(key: str, scale: float = 100.0, digits: int = 1, got=got) -> str:
                return _pm([r[key] for r in got if key in r], scale, digits)

            lines.append(
                f"| {w:.2f} | {variant} | {col('acc')} | {col('paired_acc')} | "
                f"{col('functional_share', 1.0, 2)} | {col('gate_share', 1.0, 2)} |"
            )
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for variant in VARIANTS:
        means, sds, ws = [], [], []
        for w in WEIGHTS:
            acc = [r["acc"] for r in rows if r["weight"] == w and r["variant"] == variant]
            if acc:
                ws.append(w)
                means.append(100 * statistics.fmean(acc))
                sds.append(100 * statistics.stdev(acc) if len(acc) > 1 else 0.0)
        left.errorbar(ws, means, yerr=sds, marker="o", capsize=3, label=variant)
    left.set_xlabel("mixing weight w (0: per-modality evidence, 1: cross-modal product)")
    left.set_ylabel("fused test accuracy (%)")
    left.axhline(50, color="grey", lw=0.6, ls=":")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    for variant, key, style in (
        ("pgm", "functional_share", "o-"),
        ("pgm soft", "functional_share", "s-"),
        ("pgm soft", "gate_share", "s--"),
        ("pgm measured share", "functional_share", "^-"),
        ("pgm measured share", "gate_share", "^--"),
        ("pgm soft measured share", "gate_share", "v--"),
    ):
        ws, means = [], []
        for w in WEIGHTS:
            vals = [
                r[key]
                for r in rows
                if r["weight"] == w and r["variant"] == variant and r.get(key) == r.get(key)
            ]
            if vals:
                ws.append(w)
                means.append(statistics.fmean(vals))
        right.plot(ws, means, style, label=f"{variant}: {key.replace('_', ' ')}")
    right.plot([0, 1], [1, 0], color="grey", lw=0.8, ls=":", label="1 - w")
    right.set_xlabel("mixing weight w")
    right.set_ylabel("uni-modal share")
    right.set_ylim(-0.02, 1.02)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="family")
    parser.add_argument("--figure", default=str(ROOT / "docs/figures/pgm_interaction_family.png"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(v, w, s, args.out) for w in WEIGHTS for s in seeds for v in VARIANTS]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(measure, jobs))
    Path(args.out, "family.json").write_text(json.dumps(rows, indent=1))
    figure(rows, Path(args.figure))
    print(table(rows))


if __name__ == "__main__":
    main()
