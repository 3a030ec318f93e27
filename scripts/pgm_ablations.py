"""PgM ablations: remove one component at a time, 3 seeds, through ``unipair.train``.

Until a ``unipair compare`` command exists this script is the comparison: it trains every
variant on the shared protocol config (same encoders and epoch budget as ``joint``), then
prints a markdown table of test metrics (mean +- std over seeds) and writes
``<out>/ablations.json``. Selection inside each run is on validation only (the engine does it).

    python scripts/pgm_ablations.py handwritten            # ~6 variants x 3 seeds
    python scripts/pgm_ablations.py avdigits --seeds 0 1 2 # needs UNIPAIR_FSDD_ROOT/MNIST_ROOT
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgm_targets  # the tuned PgM hyperparameters and the run helper

#: variant -> overrides of the method's hparams; each removes one PgM component
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no_partitioner": {"partition": "none"},  # u = p = h
    "no_uni_learner": {"uni_learner": False},  # no uni learner, head, loss
    "no_paired_learner": {"paired_learner": False},  # no cross-attention, paired head, loss
    "no_decoder": {"decoder": False},  # task head reads u~ + p~, no reconstruction loss
    "single_lr": {"uniform_lr": True},  # one learning rate for every group
    # not an ablation: PgM on top of OGM-GE (encoder gradients modulated after the PgM backward)
    "on_ogm_ge": {"base": "ogm_ge"},
}


def run(dataset: str, hparams: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
    """One PgM run on the protocol config (shared with pgm_targets.py)."""
    return pgm_targets.run(dataset, "pgm", hparams, seed, out)


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["handwritten", "avdigits"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("runs/pgm_ablations"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    base = dict(pgm_targets.PGM_HPARAMS[args.dataset])
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.variants:
        hp = {**base, **VARIANTS[name]}
        results[name] = []
        for seed in args.seeds:
            r = run(args.dataset, hp, seed, args.out / "tmp")
            results[name].append(r)
            print(f"{name} seed {seed}: test acc {r['test']['acc']:.4f}", flush=True)

    mods = [
        k.split("/", 1)[1] for k in results[args.variants[0]][0]["test"] if k.startswith("acc/")
    ]
    header = ["variant", "fused acc", *[f"{m} (uni head)" for m in mods], "val acc", "epoch s"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, rs in results.items():
        cells = [name, mean_std([r["test"]["acc"] for r in rs])]
        cells += [mean_std([r["test"][f"acc/{m}"] for r in rs]) for m in mods]
        cells += [mean_std([r["val"]["acc"] for r in rs])]
        cells += [f"{statistics.mean(r['train_epoch_s'] for r in rs):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(f"\n{args.dataset}, seeds {args.seeds} (test split; selection on validation)\n")
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"dataset": args.dataset, "base": base, "results": results, "table": table}
    (args.out / f"ablations_{args.dataset}.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
