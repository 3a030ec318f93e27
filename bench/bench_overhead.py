"""Framework overhead: `joint` on handwritten through unipair vs a minimal hand-written loop.

Both train the same MultimodalModel (configs/handwritten.yaml) on the same tensors with the same
optimizer and batch size; one torch thread.

1. Training epochs, alternated in one process so both loops run under the same cache and CPU
   conditions: the bare loop slices tensors and calls encoders, concat and head directly;
   unipair goes through the DataLoader, MultimodalBatch, presence masks, Method/TrainStep and
   Fabric's wrappers.
2. Whole runs of N epochs: ``unipair.train`` (train, validation metrics, two atomic checkpoints,
   metrics.csv per epoch) against the bare loop with a validation pass and one ``torch.save``
   checkpoint per epoch, the least a real training script does.

    python bench/bench_overhead.py [--epochs 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import unipair
from unipair import datasets, methods
from unipair.engine.config import load_config
from unipair.engine.trainer import make_fabric

OVERRIDES = [
    "optim.schedule=constant",
    "logging.progress=none",
    "logging.save_predictions=false",
    "fabric.accelerator=cpu",
]


class Bare:
    """The minimal loop: tensors in, loss out."""

    def __init__(self, data, cfg) -> None:
        torch.manual_seed(0)
        self.model = methods.create("joint", data.spec, cfg.model).model
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.data, self.bs = data, cfg.train.batch_size

    def _logits(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = torch.cat([self.model.encoders[m](x[m]) for m in self.model.modalities], dim=1)
        return self.model.head(feats)

    def train_epoch(self) -> None:
        x, y = self.data.train.inputs, self.data.train.labels
        self.model.train()
        for idx in torch.randperm(len(y)).split(self.bs):
            loss = F.cross_entropy(self._logits({m: v[idx] for m, v in x.items()}), y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    def validate_and_save(self, path: Path) -> float:
        self.model.eval()
        with torch.no_grad():
            acc = (self._logits(self.data.val.inputs).argmax(1) == self.data.val.labels).float()
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict()}, path)
        return float(acc.mean())


class Ours:
    """unipair's own training epoch: ``Trainer.train_epoch`` (loader -> MultimodalBatch ->
    global row counts -> Method.training_step, logs, scheduler)."""

    def __init__(self, cfg, out: str) -> None:
        from unipair.engine.loop import Trainer

        cfg = cfg.model_copy(deep=True)
        cfg.out, cfg.name = out, "alternated"
        self.trainer = Trainer(make_fabric(cfg), cfg)
        self.epoch = 0

    def train_epoch(self) -> None:
        self.trainer.train_epoch(self.epoch)
        self.epoch += 1


def alternated(epochs: int) -> tuple[float, float]:
    cfg = load_config("configs/handwritten.yaml", [*OVERRIDES, f"train.epochs={epochs}"])
    data = datasets.create("handwritten")
    times: dict[str, list[float]] = {"bare": [], "ours": []}
    with tempfile.TemporaryDirectory() as out:
        bare, ours = Bare(data, cfg), Ours(cfg, out)
        for _ in range(epochs):
            for name, loop in (("bare", bare), ("ours", ours)):
                t0 = time.perf_counter()
                loop.train_epoch()
                times[name].append(time.perf_counter() - t0)
        ours.trainer.close()
    return statistics.median(times["bare"][2:]), statistics.median(times["ours"][2:])


def whole_runs(epochs: int) -> tuple[float, float]:
    cfg = load_config("configs/handwritten.yaml", [*OVERRIDES, f"train.epochs={epochs}"])
    with tempfile.TemporaryDirectory() as out:
        bare = Bare(datasets.create("handwritten"), cfg)
        t0 = time.perf_counter()
        for _ in range(epochs):
            bare.train_epoch()
            bare.validate_and_save(Path(out) / "bare.pt")
        bare_s = time.perf_counter() - t0
        cfg.out = out
        result = unipair.train(cfg)
    ours_s = sum(row["time/epoch_s"] for row in result.history)
    return bare_s / epochs, ours_s / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description="unipair framework overhead")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bt, ot = alternated(args.epochs)
    bw, ow = whole_runs(args.epochs)
    print(f"{'joint on handwritten, per epoch':<46}{'bare':>9}{'unipair':>9}{'overhead':>10}")
    print(
        f"{'training epoch (alternated, median ms)':<46}{bt * 1e3:>9.1f}{ot * 1e3:>9.1f}"
        f"{ot / bt - 1:>10.1%}"
    )
    print(
        f"{'whole run: train+val+checkpoint (mean ms)':<46}{bw * 1e3:>9.1f}{ow * 1e3:>9.1f}"
        f"{ow / bw - 1:>10.1%}"
    )


if __name__ == "__main__":
    main()
