"""Framework overhead: one epoch of `joint` on handwritten through unipair vs a bare PyTorch loop.

Both train the same MultimodalModel (configs/handwritten.yaml) on the same tensors with the same
optimizer and batch size. The bare loop slices tensors and calls encoders, concat and head
directly; unipair adds the DataLoader, MultimodalBatch, presence masks, the Method/TrainStep
indirection, Fabric, logging, validation metrics and two atomic checkpoints per epoch.

    python bench/bench_overhead.py [--epochs 12]

Prints median seconds per epoch (training only, and training + validation) and the overhead.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import unipair
from unipair import datasets, methods
from unipair.engine.config import load_config


def bare_loop(epochs: int, cfg) -> tuple[list[float], list[float]]:
    data = datasets.create("handwritten")
    torch.manual_seed(0)
    model = methods.create("joint", data.spec, cfg.model).model
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
    )
    x, y = data.train.inputs, data.train.labels
    xv, yv = data.val.inputs, data.val.labels
    names = list(x)
    bs, n = cfg.train.batch_size, len(y)
    train_t, total_t = [], []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(n).split(bs):
            feats = torch.cat([model.encoders[m](x[m][idx]) for m in names], dim=1)
            loss = F.cross_entropy(model.head(feats), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        t1 = time.perf_counter()
        model.eval()
        with torch.no_grad():
            feats = torch.cat([model.encoders[m](xv[m]) for m in names], dim=1)
            acc = (model.head(feats).argmax(1) == yv).float().mean()
        assert acc > 0.5
        train_t.append(t1 - t0)
        total_t.append(time.perf_counter() - t0)
    return train_t, total_t


def through_unipair(epochs: int, overrides: list[str]) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config("configs/handwritten.yaml", [*overrides, f"out={out}"])
        result = unipair.train(cfg)
    train = [row["time/train_s"] for row in result.history]
    total = [row["time/epoch_s"] for row in result.history]  # + validation and checkpoints
    return train, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = [
        f"train.epochs={args.epochs}",
        "optim.schedule=constant",
        "logging.progress=none",
        "logging.save_predictions=false",
        "fabric.accelerator=cpu",
    ]
    cfg = load_config("configs/handwritten.yaml", overrides)
    bare_train, bare_total = bare_loop(args.epochs, cfg)
    ours_train, ours_total = through_unipair(args.epochs, overrides)
    skip = 2  # warm-up epochs
    bt, bT = statistics.median(bare_train[skip:]), statistics.median(bare_total[skip:])
    ot, oT = statistics.median(ours_train[skip:]), statistics.median(ours_total[skip:])
    print(f"{'per epoch (median, s)':<34}{'bare loop':>10}{'unipair':>10}{'overhead':>10}")
    print(f"{'training only':<34}{bt:>10.4f}{ot:>10.4f}{(ot / bt - 1):>10.1%}")
    print(f"{'training + validation (+ckpts)':<34}{bT:>10.4f}{oT:>10.4f}{(oT / bT - 1):>10.1%}")


if __name__ == "__main__":
    main()
