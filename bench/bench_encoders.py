"""Frozen pretrained encoder: epoch time with and without the feature cache.

A generated dataset where the frozen encoder dominates: ``joint`` on synthetic 64x64 images
(unipair's ``resnet18`` with weights saved from a random initialisation, ``freeze: all``) and a
16-d vector (a small MLP), in memory; one torch thread. The same run is trained three times:

- ``feature_cache: off``: the backbone runs on every batch (forward only: it is frozen);
- ``feature_cache: auto``, cold: the backbone runs once per split before the first epoch
  (reported as set-up), then every epoch trains the projection, fusion and head on the features;
- ``auto`` again, warm: the features are read from the cache folder.

Epoch time is ``time/epoch_s`` of metrics.csv: training and validation. The target is
>= 10x faster epochs with the cache.

    python bench/bench_encoders.py [--samples 400] [--size 64] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import unipair
from unipair.models.encoders import ResNet18Encoder


def run_config(out: Path, weights: Path, args: argparse.Namespace, name: str, cache: str) -> dict:
    return {
        "dataset": {
            "name": "synthetic",
            "options": {
                "shapes": {"image": [3, args.size, args.size], "vec": [16]},
                "num_samples": args.samples,
                "num_classes": 4,
                "seed": 0,
                "lazy": False,
            },
        },
        "method": "joint",
        "model": {
            "width": 64,
            "encoders": {
                "image": {
                    "name": "resnet18",
                    "options": {"weights": str(weights), "freeze": "all"},
                },
                "vec": {"name": "mlp", "options": {"hidden": [64]}},
            },
        },
        "train": {"epochs": args.epochs, "batch_size": 32, "feature_cache": cache},
        "fabric": {"accelerator": "cpu"},
        "logging": {"progress": "none", "save_predictions": False},
        "out": str(out),
        "name": name,
    }


def measure(cfg: dict) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = unipair.train(cfg)
    wall = time.perf_counter() - t0
    epochs = [row["time/epoch_s"] for row in result.history]
    cache = result.summary.get("feature_cache", {}).get("image", {})
    return {
        "epoch_s": statistics.median(epochs),
        "setup_s": cache.get("seconds", 0.0),
        "wall_s": wall,
        "val_acc": result.summary["val"]["acc"],
        "cached": cache.get("cached", False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="frozen encoder: epochs with and without cache")
    parser.add_argument("--samples", type=int, default=400, help="whole dataset (70%% train)")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        weights = out / "resnet18.pth"
        torch.manual_seed(0)
        torch.save(ResNet18Encoder((3, args.size, args.size), 64).backbone.state_dict(), weights)
        rows = {
            "off": measure(run_config(out, weights, args, "off", "off")),
            "auto, cold": measure(run_config(out, weights, args, "cold", "auto")),
            "auto, warm": measure(run_config(out, weights, args, "warm", "auto")),
        }
    base = rows["off"]["epoch_s"]
    print(
        f"joint, resnet18 (freeze: all) on {args.samples} generated {args.size}x{args.size} "
        f"images + a 16-d vector; {args.epochs} epochs, 1 thread"
    )
    print(f"{'feature_cache':<14}{'epoch (s)':>11}{'speed-up':>10}{'set-up (s)':>12}"
          f"{'run (s)':>9}{'val acc':>9}")  # fmt: skip
    for name, r in rows.items():
        print(
            f"{name:<14}{r['epoch_s']:>11.3f}{base / r['epoch_s']:>9.1f}x{r['setup_s']:>12.2f}"
            f"{r['wall_s']:>9.2f}{r['val_acc']:>9.4f}"
        )


if __name__ == "__main__":
    main()
