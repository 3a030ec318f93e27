"""MLA vs joint on the real datasets, 3 seeds each, under the shared protocol configs.

Every method gets the encoders, optimizer and epoch budget of ``configs/<dataset>.yaml``; only
``train.seed`` (and, for MLA, its own hyperparameters via ``--mla``) change. Model selection is
the engine's: best validation epoch, test read once. Finished runs are reused (the run
directory ``<out>/<dataset>-<tag>-s<seed>`` holds summary.json), so the script resumes.

    export UNIPAIR_FSDD_ROOT=/work/shared/data/fsdd/recordings \\
           UNIPAIR_MNIST_ROOT=/work/shared/data/mnist
    python scripts/mla_targets.py                          # both datasets, joint + mla
    python scripts/mla_targets.py --datasets handwritten --mla hgm=off --tag mla-nohgm --split val

Targets (test): avdigits: MLA's audio accuracy >= joint's + 10 points, fused >= joint's - 0.5;
handwritten: MLA's mean per-view accuracy >= joint's + 15 points, fused >= joint's - 0.3.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "avdigits": {"modality": 10.0, "fused": -0.5},
    "handwritten": {"modality": 15.0, "fused": -0.3},
}


def run(dataset: str, method: str, tag: str, seed: int, out: Path, hp: list[str]) -> dict:
    """Train one (dataset, method, seed) unless its finished run directory already exists."""
    import unipair
    from unipair.engine.config import load_config

    name = f"{dataset}-{tag}-s{seed}"
    summary = out / name / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    overrides = [
        f"method.name={method}",
        f"train.seed={seed}",
        f"out={out}",
        f"name={name}",
        "logging.progress=none",
        *(f"method.hparams.{kv}" for kv in hp),
    ]
    cfg = load_config(ROOT / "configs" / f"{dataset}.yaml", overrides)
    return unipair.train(cfg).summary


def _stats(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * sd:.2f}"


def report(results: dict[str, dict[str, list[dict]]], split: str) -> str:
    """Markdown: per-seed rows and mean ± std per (dataset, method), on ``split``."""
    lines = []
    for dataset, by_method in results.items():
        names = next(iter(by_method.values()))[0]["modalities"]
        head = ["method", "seed", "fused", *names, "mean per-modality"]
        lines += [f"\n### {dataset} ({split})\n", "| " + " | ".join(head) + " |"]
        lines.append("|" + "|".join("---" for _ in head) + "|")
        for tag, summaries in by_method.items():
            for s in summaries:
                m = s[split]
                per = [m[f"acc/{n}"] for n in names]
                cells = [tag, str(s["seed"]), f"{100 * m['acc']:.2f}"]
                cells += [f"{100 * v:.2f}" for v in per] + [f"{100 * statistics.fmean(per):.2f}"]
                lines.append("| " + " | ".join(cells) + " |")
            fused = [s[split]["acc"] for s in summaries]
            per_mod = {n: [s[split][f"acc/{n}"] for s in summaries] for n in names}
            mean_mod = [statistics.fmean(s[split][f"acc/{n}"] for n in names) for s in summaries]
            cells = [f"**{tag}**", "mean ± sd", _stats(fused)]
            cells += [_stats(per_mod[n]) for n in names] + [_stats(mean_mod)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check(results: dict[str, dict[str, list[dict]]], mla_tag: str) -> list[str]:
    """The targets, on test means over seeds."""
    out = []
    for dataset, by_method in results.items():
        if "joint" not in by_method or mla_tag not in by_method:
            continue
        joint, mla = by_method["joint"], by_method[mla_tag]
        names = joint[0]["modalities"]

        def mean(runs: list[dict], key: str) -> float:
            return 100 * statistics.fmean(r["test"][key] for r in runs)

        def per_view(runs: list[dict], names: list[str] = names) -> float:
            return statistics.fmean(mean(runs, f"acc/{n}") for n in names)

        if dataset == "avdigits":
            gain = mean(mla, "acc/audio") - mean(joint, "acc/audio")
            what = "audio accuracy"
        else:
            gain = per_view(mla) - per_view(joint)
            what = "mean per-view accuracy"
        fused = mean(mla, "acc") - mean(joint, "acc")
        t = TARGETS.get(dataset)
        if t is None:
            continue
        out.append(
            f"{dataset}: {what} {gain:+.2f} points (target >= +{t['modality']:.0f}: "
            f"{'met' if gain >= t['modality'] else 'MISSED'}); fused {fused:+.2f} points "
            f"(target >= {t['fused']:+.1f}: {'met' if fused >= t['fused'] else 'MISSED'})"
        )
    return out


def fusion_modes(out: Path, dataset: str, tag: str, seeds: list[int]) -> str:
    """Re-evaluate each finished MLA run's best checkpoint with every fusion mode (no
    retraining; the epoch was chosen on validation with the run's own fusion)."""
    from unipair.engine.config import load_config
    from unipair.engine.predict import build_method, load_data

    modes = ["entropy", "mean", "batch_entropy"]
    acc: dict[str, dict[str, list[float]]] = {m: {"val": [], "test": []} for m in modes}
    for seed in seeds:
        run_dir = out / f"{dataset}-{tag}-s{seed}"
        cfg = load_config(run_dir / "config.yaml")
        data = load_data(cfg)
        state = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=True)
        for mode in modes:
            cfg.method.hparams = {**cfg.method.hparams, "fusion": mode}
            method = build_method(cfg, data)
            method.load_state_dict(state["method"])
            method.eval()
            for split in ("val", "test"):
                ds = data.split(split)
                correct = 0
                with torch.no_grad():
                    for i in range(0, len(ds), 512):
                        b = ds.__getitems__(list(range(i, min(i + 512, len(ds)))))
                        correct += int((method.predict(b).logits.argmax(-1) == b.labels).sum())
                acc[mode][split].append(correct / len(ds))
    lines = [f"\n### {dataset}: fusion modes on the same checkpoints ({tag})\n"]
    lines += ["| fusion | val fused | test fused |", "|---|---|---|"]
    for mode in modes:
        lines.append(f"| {mode} | {_stats(acc[mode]['val'])} | {_stats(acc[mode]['test'])} |")
    return "\n".join(lines)


def weight_distribution(out: Path, dataset: str, tag: str, seeds: list[int]) -> str:
    """Fusion-weight distribution on test (per modality, pooled over the seeds' runs)."""
    import numpy as np

    from unipair.evaluation.reports.mla import fusion_weight_summary

    pooled: dict[str, np.ndarray] = {}
    for seed in seeds:
        with np.load(out / f"{dataset}-{tag}-s{seed}" / "test_predictions.npz") as z:
            for k in z.files:
                if k.startswith(("extra/fusion_weight/", "present/")):
                    pooled[k] = np.concatenate([pooled[k], z[k]]) if k in pooled else z[k]
    summary = fusion_weight_summary(pooled)
    cols = ["mean", "std", "q05", "q25", "q50", "q75", "q95", "top"]
    lines = [f"\n### {dataset}: test fusion weights ({tag}, {len(seeds)} seeds pooled)\n"]
    lines += ["| modality | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m, row in summary.items():
        lines.append(f"| {m} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["handwritten", "avdigits"])
    p.add_argument("--methods", nargs="+", default=["joint", "mla"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--mla", nargs="*", default=[], help="MLA hyperparameters, key=value")
    p.add_argument("--tag", default="mla", help="run-name tag for the mla runs")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "mla_targets")
    p.add_argument("--split", choices=["val", "test"], default="test")
    p.add_argument("--json", type=Path, help="write all summaries here")
    p.add_argument(
        "--fusion-modes", action="store_true", help="also compare fusion modes and weights"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    results: dict[str, dict[str, list[dict]]] = {}
    for dataset in args.datasets:
        for method in args.methods:
            tag = args.tag if method == "mla" else method
            hp = args.mla if method == "mla" else []
            for seed in args.seeds:
                s = run(dataset, method, tag, seed, args.out, hp)
                results.setdefault(dataset, {}).setdefault(tag, []).append(s)
                print(
                    f"{dataset} {tag} seed {seed}: val {s['val']['acc']:.4f} "
                    f"test {s['test']['acc']:.4f}",
                    flush=True,
                )
    print(report(results, args.split))
    if args.split == "test":
        print()
        for line in check(results, args.tag):
            print(line)
    if args.fusion_modes and "mla" in args.methods:
        for dataset in args.datasets:
            print(weight_distribution(args.out, dataset, args.tag, args.seeds))
            print(fusion_modes(args.out, dataset, args.tag, args.seeds))
    if args.json:
        keep = {
            d: {t: [{k: s[k] for k in ("seed", "val", "test", "best_epoch")} for s in runs]
                for t, runs in by.items()}
            for d, by in results.items()
        }  # fmt: skip
        args.json.write_text(
            yaml.safe_dump(keep) if args.json.suffix == ".yaml" else json.dumps(keep, indent=1)
        )


if __name__ == "__main__":
    main()
