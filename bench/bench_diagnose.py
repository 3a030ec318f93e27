"""`unipair diagnose handwritten` against the runs it needs, done separately.

The diagnosis trains joint and one unimodal run per modality, then measures them (validation
probes, leave-one-out and Shapley contributions). Its target: no longer than training those
same runs one `unipair train` command after another, on the same budget (the diagnosis's
default: 10 epochs, seed 0, test split not read). Every command is a fresh subprocess with one
torch thread (OMP_NUM_THREADS=1, --threads 1) writing into a fresh folder, so nothing is reused;
rounds alternate the two ways and the medians are reported, with the training time the runs
themselves record (summary.json: train_time_s) and the time of a second diagnose call that
reuses every run.

    python bench/bench_diagnose.py [--repeat 3] [--epochs 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODALITIES = ("pix", "fou", "fac", "zer", "kar", "mor")


def cli() -> list[str]:
    script = Path(sys.executable).parent / "unipair"
    return [str(script)] if script.exists() else [sys.executable, "-m", "unipair"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def train_seconds(folder: Path) -> float:
    """Sum of train_time_s over the run directories under ``folder``."""
    return sum(json.loads(p.read_text())["train_time_s"] for p in folder.rglob("summary.json"))


def diagnose(out: Path, epochs: int, env: dict[str, str]) -> float:
    argv = [*cli(), "diagnose", "handwritten", "--epochs", str(epochs), "--threads", "1"]
    return timed([*argv, "--out", str(out)], env)


def separately(out: Path, epochs: int, env: dict[str, str]) -> float:
    """joint, then each unimodal run, one `unipair train` each (the diagnosis's budget)."""
    common = ["--dataset", "handwritten", "--epochs", str(epochs), "--seed", "0", "--no-test",
              "--out", str(out), "--set", "logging.progress=none"]  # fmt: skip
    total = timed([*cli(), "train", "--method", "joint", *common, "--name", "joint"], env)
    for m in MODALITIES:
        total += timed(
            [*cli(), "train", "--method", "unimodal", *common, "--name", f"unimodal-{m}",
             "--set", f"method.hparams.modality={m}"],
            env,
        )  # fmt: skip
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description="unipair diagnose vs its runs done separately")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--epochs", type=int, default=10, help="budget of every run")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["OMP_NUM_THREADS"] = "1"
    rows: dict[str, list[float]] = {
        "diagnose": [],
        "diagnose, runs' train_time_s": [],
        "diagnose again (every run reused)": [],
        "separately (7 x unipair train)": [],
        "separately, runs' train_time_s": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-diagnose-") as tmp:
        root = Path(tmp)
        diagnose(root / "warmup", 1, env)  # file and bytecode caches
        for i in range(args.repeat):
            d, s = root / f"diagnose{i}", root / f"separate{i}"
            rows["diagnose"].append(diagnose(d, args.epochs, env))
            rows["diagnose, runs' train_time_s"].append(train_seconds(d))
            rows["diagnose again (every run reused)"].append(diagnose(d, args.epochs, env))
            rows["separately (7 x unipair train)"].append(separately(s, args.epochs, env))
            rows["separately, runs' train_time_s"].append(train_seconds(s))
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(
        f"handwritten, joint + {len(MODALITIES)} unimodal runs, {args.epochs} epochs, seed 0, "
        f"one torch thread; median of {args.repeat} rounds ({os.cpu_count()} CPU cores)"
    )
    for name, value in med.items():
        print(f"  {name:<38}{value:>8.1f} s")
    ratio = med["diagnose"] / med["separately (7 x unipair train)"]
    verdict = "met" if ratio <= 1.0 else "missed"
    print(f"diagnose / separately: {ratio:.2f} (target <= 1.00: {verdict})")


if __name__ == "__main__":
    main()
