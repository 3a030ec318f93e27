"""Reference-faithful options measured against today's defaults, 3 seeds, validation first.

Every variant trains under the shared protocol config ``configs/<dataset>.yaml`` (encoders,
optimizer, epoch budget); only the method's hyperparameters differ. Decisions read the
validation columns (the best epoch is chosen on validation, test is read once per run and
reported beside). Finished runs are reused and interrupted ones resumed, so the script
can be stopped and started again.

    export UNIPAIR_FSDD_ROOT=/work/shared/data/fsdd/recordings \\
           UNIPAIR_MNIST_ROOT=/work/shared/data/mnist
    python scripts/ablations.py hgm            # MLA: alpha schedule x projection order
    python scripts/ablations.py ogm            # OGM-GE: the reference recipe vs continuous

Columns: fused accuracy, and the mean over modalities of the method's own per-modality
accuracy (MLA: its shared head on one modality; OGM-GE/joint: the modality's slice of the
fused head), mean ± sd over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (method, hyperparameter overrides)
SETS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "hgm": {
        "mla (ours: constant alpha, project then update)": ("mla", []),
        "mla, hgm off": ("mla", ["hgm=off"]),
        "mla, reference alpha schedule": ("mla", ["alpha_schedule=reference"]),
        "mla, reference order (update then project)": (
            "mla",
            ["hgm_order=update_then_project"],
        ),
        "mla, reference schedule + order": (
            "mla",
            ["alpha_schedule=reference", "hgm_order=update_then_project"],
        ),
    },
    "ogm": {
        "joint": ("joint", []),
        "ogm_ge continuous (alpha 0.5, 1 - tanh(alpha (rho - 1)))": (
            "ogm_ge",
            ["alpha=0.5", "coefficient=shifted"],
        ),
        "ogm_ge reference (alpha 0.8, 1 - tanh(alpha rho), epochs 0-50; the default)": (
            "ogm_ge",
            ["alpha=0.8", "coefficient=reference", "end_epoch=50"],
        ),
    },
}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")[:60]


def run(job: tuple[str, str, list[str], int, str]) -> dict:
    """Train one (dataset, variant, seed); a finished run is reused, an interrupted one resumed."""
    dataset, method, hparams, seed, out = job
    import torch

    torch.set_num_threads(1)
    import unipair
    from unipair.engine.config import load_config

    name = f"{dataset}-{_slug(method + '-' + '-'.join(hparams))}-s{seed}"
    summary = Path(out) / name / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    overrides = [
        f"method.name={method}",
        f"train.seed={seed}",
        f"out={out}",
        f"name={name}",
        "logging.progress=none",
        *(f"method.hparams.{kv}" for kv in hparams),
    ]
    cfg = load_config(ROOT / "configs" / f"{dataset}.yaml", overrides)
    last = Path(out) / name / "last.ckpt"
    return unipair.train(cfg, resume=last.parent if last.is_file() else None).summary


def _stats(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def table(dataset: str, results: dict[str, list[dict]]) -> str:
    names = next(iter(results.values()))[0]["modalities"]
    lines = [
        f"\n### {dataset}\n",
        "| variant | val fused | val per-modality | test fused | test per-modality |",
        "|---|---|---|---|---|",
    ]
    for variant, runs in results.items():
        cells = [variant]
        for split in ("val", "test"):
            fused = [r[split]["acc"] for r in runs]
            per = [statistics.fmean(r[split][f"acc/{m}"] for m in names) for r in runs]
            cells += [_stats(fused), _stats(per)]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted(r["seed"] for r in next(iter(results.values())))
    lines.append(f"\n(seeds {seeds}; mean ± sd)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set", choices=sorted(SETS))
    parser.add_argument("--datasets", default="handwritten,avdigits")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="ablations")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = SETS[args.set]
    for dataset in args.datasets.split(","):
        jobs = [
            (dataset, method, hp, seed, args.out)
            for method, hp in variants.values()
            for seed in seeds
        ]
        with ProcessPoolExecutor(args.jobs) as pool:
            summaries = list(pool.map(run, jobs))
        results: dict[str, list[dict]] = {}
        for variant, summary in zip([v for v in variants for _ in seeds], summaries, strict=True):
            results.setdefault(variant, []).append(summary)
        print(table(dataset, results), flush=True)


if __name__ == "__main__":
    main()
