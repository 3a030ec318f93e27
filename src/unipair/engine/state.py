"""``TrainState``: the progress of a run, and the checkpoint schema, in one place.

A checkpoint holds ``method``, ``optimizer``, ``scheduler``, ``rng`` and ``state`` (this
dataclass as a dict). The selection rule lives here only: an epoch becomes best when its
validation score beats the best so far, ties on the monitored metric going to the lower
validation loss; a non-finite score never becomes best, so it never blocks a finite one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["TrainState"]


@dataclass
class TrainState:
    epoch: int = -1  #: last finished epoch
    global_step: int = 0  #: optimizer steps taken
    best: list[float] | None = None  #: [sign * monitored metric, -val loss] of the best epoch
    best_epoch: int = -1
    bad_epochs: int = 0  #: epochs since the last improvement (early stopping)
    train_time: float = 0.0  #: seconds spent in training epochs
    history: list[dict[str, Any]] = field(default_factory=list)  #: one metrics row per epoch

    @staticmethod
    def score(val: dict[str, float], monitor: str) -> list[float]:
        """What selection compares: the monitored metric (loss negated), then -val loss."""
        sign = -1.0 if monitor == "loss" else 1.0
        return [sign * val[monitor], -val["loss"]]

    def improves(self, score: list[float]) -> bool:
        """True if ``score`` beats the best so far (a non-finite tie-breaker counts as -inf)."""
        if not math.isfinite(score[0]):
            return False
        key = [score[0], score[1] if math.isfinite(score[1]) else -math.inf]
        return self.best is None or key > self.best

    def record(self, row: dict[str, Any], score: list[float]) -> bool:
        """Add a finished epoch; returns whether it is the new best."""
        self.epoch = int(row["epoch"])
        self.history.append(row)
        improved = self.improves(score)
        if improved:
            self.best = [score[0], score[1] if math.isfinite(score[1]) else -math.inf]
            self.best_epoch, self.bad_epochs = self.epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
