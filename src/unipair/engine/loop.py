"""The training loop: a small ``Trainer`` on Lightning Fabric that enforces the honest protocol.

Each epoch trains, then validates; the best epoch is chosen on validation alone
(:class:`TrainState`); the test split is read once, after training, with the best checkpoint.
Everything a run writes (config.yaml, metrics.csv, last.ckpt, best.ckpt, summary.json) is
written atomically, and ``last.ckpt`` holds all that an exact resume needs.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from torch import Tensor

from unipair import errors
from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import MultimodalDataset, fingerprint
from unipair.data.splits import stratified_holdout
from unipair.engine.auxiliary import load_auxiliary
from unipair.engine.checkpoint import (
    fabric_load,
    get_rng_state,
    read_checkpoint,
    save_checkpoint,
    set_rng_state,
    snapshot_checkpoint,
    state_checksum,
)
from unipair.engine.config import RunConfig
from unipair.engine.feature_cache import cache_features
from unipair.engine.metrics import MultimodalMetrics
from unipair.engine.optim import build_optimizer, build_scheduler, check_parameter_groups
from unipair.engine.predict import (
    build_method,
    hide_train_modalities,
    load_data,
    make_loader,
    on_device,
    predict_split,
    save_predictions,
)
from unipair.engine.progress import make_reporter
from unipair.engine.provenance import check_same_weights, encoder_weights
from unipair.engine.run_dir import RunDir, RunResult, default_run_name, environment_info
from unipair.engine.samplers import GlobalBatchSampler, ShardBatchSampler
from unipair.engine.state import TrainState
from unipair.errors import ConfigError, RunDirError, TrainingError, UnipairError
from unipair.io import exclusive_lock, write_text
from unipair.methods import EpochData, TrainStep
from unipair.methods.base import row_counts
from unipair.models.encoders import compile_encoders
from unipair.models.pretrained import freezable
from unipair.models.sync_batchnorm import convert_sync_batchnorm

__all__ = ["Trainer"]

#: added to the run seed for the held-out carve, so it never coincides with a data split seed
_HELDOUT_SEED_OFFSET = 104_729


def _run_dir_problem(run: RunDir, resume: bool) -> str | None:
    """Why ``run`` cannot be started (or resumed), with what to do instead; None if it can."""
    files = [f.name for f in run.path.iterdir() if f.name != ".lock"]
    if resume:
        if not run.config.is_file():
            return f"{run.path} is not a run directory (no config.yaml)"
        if run.is_finished():
            return (
                f"{run.path} is finished (its test split has been read); start a new run to "
                "train longer"
            )
        if not run.last.is_file():
            return (
                f"cannot resume {run.path}: it stopped before its first epoch ended; delete it "
                "to start over"
            )
        return None
    if not files:
        return None
    if run.is_finished():
        return f"run directory {run.path} already exists (it is finished)"
    if run.last.is_file():
        return f"run directory {run.path} already exists (resume it with --resume {run.path})"
    return (
        f"run directory {run.path} already exists but holds no finished epoch (it stopped "
        "before its first epoch ended); delete it to start over, or use another --name"
    )


class Trainer:
    """One run: ``Trainer(fabric, cfg, resume).fit()``; each step of the protocol is a method.
    ``close()`` (called by ``fit``) releases the run directory's lock."""

    def __init__(self, fabric: Fabric, cfg: RunConfig, resume: str | Path | None = None) -> None:
        self._locks = ExitStack()
        try:
            self._setup(fabric, cfg, resume)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._locks.close()

    def _setup(self, fabric: Fabric, cfg: RunConfig, resume: str | Path | None) -> None:
        self.fabric, self.cfg = fabric, cfg
        self.t_start = self._epoch_start = time.perf_counter()
        fabric.seed_everything(cfg.train.seed, verbose=False)
        self.data = load_data(cfg, missing=False)  # hidden after the feature cache
        if not cfg.train.test:
            self.data.withhold_test()
        self.method = build_method(cfg, self.data)
        self._check_accumulation()
        with torch.random.fork_rng(devices=[]):  # building them must not shift the run's RNG
            self.auxiliary = load_auxiliary(self.method, cfg, self.data, fabric.device)
        if cfg.fabric.sync_batchnorm and fabric.world_size > 1:
            convert_sync_batchnorm(self.method, fabric.device.type)
        if cfg.fabric.compile:
            compile_encoders(self.method)
        self.weights = encoder_weights(self.method)
        self.freezable = freezable(self.method)
        self._frozen: dict[str, tuple[str, ...]] = {}
        # optimizer and DDP wrapper see every parameter trainable (nothing is frozen before the
        # first epoch starts), so an encoder frozen now can train later (until_epoch:N)
        groups = self.method.parameter_groups()
        check_parameter_groups(self.method, groups)
        optimizer = build_optimizer(groups, cfg.optim)
        self.scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.epochs)
        self.module, self.optimizer = fabric.setup(self.method, optimizer)
        self.run = self._open_run_dir(resume)
        self.state = TrainState()
        if resume is not None:
            self.restore()
        with torch.random.fork_rng(devices=[]):  # its loaders must not shift the run's RNG
            self.feature_cache = cache_features(self.method, cfg, self.data, fabric)
        hide_train_modalities(self.data, cfg)  # on the rows: cached features are per sample
        self.train_set, self.heldout, self.heldout_info = self._carve_heldout()
        self._build_loaders()
        self.step = self._train_step()
        self.step.global_step = self.state.global_step
        label = cfg.logging.label
        self.reporter = make_reporter(
            cfg.logging.progress, fabric.is_global_zero, f"{label}: " if label else ""
        )
        for m, info in self.feature_cache.items():
            if info["cached"]:
                files = info["files"].values()
                done = "computed" if any(f["computed"] for f in files) else "read"
                where = Path(next(iter(files))["path"]).parent
                self.reporter.message(f"feature cache: {m} features {done} ({where})")
            else:
                self.reporter.message(f"feature cache: {m} not cached: {info['reason']}")

    # ---- set-up ---------------------------------------------------------------------------
    def _check_accumulation(self) -> None:
        if self.cfg.train.accumulate > 1 and (why := self.method.accumulation_problem()):
            raise ConfigError(
                f"train.accumulate={self.cfg.train.accumulate}: method "
                f"{self.cfg.method.name!r} cannot accumulate gradients exactly ({why}); use "
                "train.accumulate=1"
            )

    def _carve_heldout(self) -> tuple[MultimodalDataset, MultimodalDataset | None, dict]:
        """The method's held-out part of train: seeded, class-stratified, never val or test."""
        fraction = self.method.heldout_fraction()
        train = self.data.train
        if fraction <= 0:
            return train, None, {}
        seed = self.cfg.train.seed + _HELDOUT_SEED_OFFSET
        labels = train.labels.numpy()
        kept, held = stratified_holdout(labels, np.arange(len(train)), fraction, seed, "held-out")
        info = {
            "fraction": fraction,
            "size": len(held),
            "seed": seed,
            "index_fingerprint": fingerprint(held),
        }
        return train.subset(kept), train.subset(held), info

    def _open_run_dir(self, resume: str | Path | None) -> RunDir:
        """The run directory, locked by rank 0 for the whole run; every rank acts on rank 0's
        verdict, so a refusal never leaves the other processes waiting."""
        fabric, cfg = self.fabric, self.cfg
        if resume is not None:
            run = RunDir(resume)
        else:
            name = cfg.name or default_run_name(cfg.dataset.name, cfg.method.name, cfg.train.seed)
            run = RunDir(Path(cfg.out) / fabric.broadcast(name, src=0))
        problem: tuple[str, str] | None = None
        if fabric.is_global_zero:
            try:
                self._locks.enter_context(exclusive_lock(run.path, "training"))
                why = _run_dir_problem(run, resume is not None)
                problem = None if why is None else ("RunDirError", why)
                if problem is None and resume is None:
                    write_text(run.config, cfg.to_yaml())
            except UnipairError as e:
                problem = (type(e).__name__, str(e))
        problem = fabric.broadcast(problem, src=0)
        if problem is not None:
            raise getattr(errors, problem[0], RunDirError)(problem[1])
        return run

    def _build_loaders(self) -> None:
        fabric, cfg = self.fabric, self.cfg
        world, rank = fabric.world_size, fabric.global_rank
        pin = cfg.train.pin_memory
        self.pin = fabric.device.type == "cuda" if pin is None else pin
        workers, prefetch = cfg.train.num_workers, cfg.train.prefetch_factor
        self.sampler = GlobalBatchSampler(
            len(self.train_set), cfg.train.batch_size, cfg.train.seed, rank, world,
            cfg.train.drop_last,
        )  # fmt: skip
        if len(self.sampler) == 0:
            raise ConfigError(
                f"train split has {len(self.train_set)} samples: no batch of size "
                f"{cfg.train.batch_size} with drop_last={cfg.train.drop_last}"
            )
        self.eval_bs = max(1, cfg.train.eval_batch_size // world)
        self.train_loader = make_loader(self.train_set, self.sampler, workers, self.pin, prefetch)
        self.val_loader = make_loader(
            self.data.val.eval_view(),
            ShardBatchSampler(len(self.data.val), self.eval_bs, rank, world),
            workers,
            self.pin,
            prefetch,
        )
        self.metrics = MultimodalMetrics(self.data.spec.num_classes, self.method.modalities)
        self.metrics.to(fabric.device)
        self.epoch_data = EpochData(
            self.method,
            probe=lambda: self._shard(self.train_set.eval_view()),
            heldout=None
            if self.heldout is None
            else (lambda: self._shard(self.heldout.eval_view())),
            heldout_size=len(self.heldout) if self.heldout is not None else 0,
        )

    def _shard(self, ds: MultimodalDataset):
        """This process's share of ``ds`` in evaluation batches, on the device."""
        fabric = self.fabric
        sampler = ShardBatchSampler(len(ds), self.eval_bs, fabric.global_rank, fabric.world_size)
        loader = make_loader(ds, sampler, self.cfg.train.num_workers, self.pin)
        return (on_device(b, fabric) for b in loader)

    def _train_step(self) -> TrainStep:
        fabric, cfg = self.fabric, self.cfg

        def clip() -> None:
            if cfg.optim.grad_clip is not None:
                fabric.clip_gradients(self.module, self.optimizer, max_norm=cfg.optim.grad_clip)

        return TrainStep(
            self.module,
            self.optimizer,
            backward=fabric.backward,
            clip=clip,
            all_reduce=lambda t: fabric.all_reduce(t, reduce_op="mean"),
            no_sync=lambda: fabric.no_backward_sync(self.module),
            world_size=fabric.world_size,
            seed=cfg.train.seed,
        )

    # ---- the protocol ---------------------------------------------------------------------
    def fit(self) -> RunResult:
        try:
            return self._fit()
        except KeyboardInterrupt:
            self.reporter.close()
            if self.fabric.is_global_zero:
                last, path = self.state.epoch, self.run.path
                kept = (
                    f"epoch {last}; continue with: unipair train --resume {path}"
                    if last >= 0
                    else "no finished epoch; delete it to start over"
                )
                print(f"interrupted: {path} keeps {kept}", file=sys.stderr, flush=True)
            raise
        finally:
            self.close()

    def _fit(self) -> RunResult:
        epochs = self.cfg.train.epochs
        stopped_early = False
        for epoch in range(self.state.epoch + 1, epochs):
            row = self.train_epoch(epoch)
            val = self.validate(row)
            improved = self.select(row, val)
            self.save(val, improved)
            self.reporter.end_epoch(row, improved)
            if stopped_early := self.should_stop():
                patience = self.cfg.train.early_stopping_patience
                self.reporter.message(f"early stop: no improvement in {patience} epochs")
                break
        self.reporter.close()
        if self.state.best is None:
            monitor = self.cfg.train.monitor
            raise TrainingError(
                f"no epoch had a finite validation {monitor} (every value was NaN or inf), so "
                f"no model can be selected; see {self.run.metrics}"
            )
        return self.test_once(stopped_early)

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training rows; returns the epoch's metrics row (train part)."""
        fabric, method, step = self.fabric, self.method, self.step
        t0 = self._epoch_start = time.perf_counter()
        self.sampler.set_epoch(epoch)
        method.train()
        self.freeze(epoch)
        step.epoch = epoch
        method.on_train_epoch_start(step, self.epoch_data)
        self.reporter.start_epoch(epoch, self.cfg.train.epochs, len(self.sampler))
        sums: dict[str, Tensor] = {}
        counts: dict[str, int] = {}  # a method may log a key in some steps only
        step.batches = len(self.sampler)
        for i, batch in enumerate(self.train_loader):
            step.batch = i
            logs = self.optimizer_step(batch)
            for k, v in logs.items():
                sums[k] = sums[k] + v if k in sums else v
                counts[k] = counts.get(k, 0) + 1
            loss = logs.get("loss")
            self.reporter.advance(float(loss) if loss is not None and i % 10 == 0 else None)
        row: dict[str, Any] = {"epoch": epoch}
        for k, v in sums.items():
            row[f"train/{k}"] = float(fabric.all_reduce(v / counts[k], reduce_op="mean"))
        for g in self.optimizer.param_groups:
            row[f"lr/{g['name']}"] = g["lr"]
        self.scheduler.step()
        loss = row.get("train/loss", 0.0)
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged in epoch {epoch}: the training loss is {loss} (lower "
                f"optim.lr, or check the inputs); {self.run.last} holds the last finite epoch"
            )
        seconds = time.perf_counter() - t0
        self.state.train_time += seconds
        row["time/train_s"] = round(seconds, 4)
        return row

    def freeze(self, epoch: int) -> None:
        """Apply every encoder's ``freeze`` for ``epoch`` (also the first epoch of a resumed
        run): frozen parameters get no gradient, so neither the optimizer nor weight decay moves
        them, and frozen modules stay in eval mode (BatchNorm keeps its statistics)."""
        for name, encoder in self.freezable.items():
            frozen = encoder.freeze.apply(encoder, epoch)
            if frozen != self._frozen.get(name, ()):
                what = f"frozen: {', '.join(frozen)}" if frozen else "trains entirely"
                self.reporter.message(f"epoch {epoch}: {name} {what} (freeze: {encoder.freeze})")
            self._frozen[name] = frozen

    def optimizer_step(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        """One optimizer step on this process's share of a global batch, split into
        ``train.accumulate`` micro-batches; returns the logs summed over them."""
        fabric, step = self.fabric, self.step
        # one process, one micro-batch: each batch is its own step, TrainStep counts locally
        exact_locally = fabric.world_size == 1 and self.cfg.train.accumulate == 1
        step.counts = {} if exact_locally else self._global_counts(batch)
        parts = [batch] if exact_locally else self._micro_batches(batch, step.counts[""])
        step.micro_batches = len(parts)
        logs: dict[str, Tensor] = {}
        for i, part in enumerate(parts):
            step.micro_batch = i
            part = on_device(part, fabric, non_blocking=self.pin)
            for k, v in self.method.training_step(part, step).items():
                v = v.detach().float()
                logs[k] = logs[k] + v if k in logs else v
        step.micro_batch, step.micro_batches = 0, 1
        step.global_step += 1
        return logs

    def _global_counts(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        counts = row_counts([batch])
        vec = torch.tensor(list(counts.values()), dtype=torch.float32, device=self.fabric.device)
        if self.fabric.world_size > 1:
            vec = self.fabric.all_reduce(vec, reduce_op="sum")
        return dict(zip(counts, vec.unbind(), strict=True))

    def _micro_batches(self, batch: MultimodalBatch, global_rows: Tensor) -> list[MultimodalBatch]:
        accumulate = self.cfg.train.accumulate
        if accumulate == 1:
            return [batch]
        # as many micro-batches as every process can fill (the same number on each)
        n = max(1, min(accumulate, int(global_rows) // self.fabric.world_size))
        return [batch.subset(rows) for rows in torch.arange(len(batch)).tensor_split(n)]

    def validate(self, row: dict[str, Any]) -> dict[str, float]:
        """Validation metrics of the epoch (added to ``row``); then ``on_validation_end``."""
        val, _ = predict_split(self.method, self.val_loader, self.metrics, self.fabric)
        row.update({f"val/{k}": v for k, v in val.items()})
        row["time/epoch_s"] = round(time.perf_counter() - self._epoch_start, 4)
        self.method.on_validation_end(self.step, val)
        return val

    def select(self, row: dict[str, Any], val: dict[str, float]) -> bool:
        """Record the epoch; True if it is the best so far (validation only)."""
        self.state.global_step = self.step.global_step
        return self.state.record(row, TrainState.score(val, self.cfg.train.monitor))

    def save(self, val: dict[str, float], improved: bool) -> None:
        fabric, run = self.fabric, self.run
        save_checkpoint(fabric, run.last, self._checkpoint(val))
        if improved:  # best.ckpt is last.ckpt of the best epoch
            snapshot_checkpoint(fabric, run.last, run.best)
        if fabric.is_global_zero:
            run.write_metrics(self.state.history)
        row = self.state.history[-1]
        fabric.log_dict({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def _checkpoint(self, val: dict[str, float]) -> dict[str, Any]:
        """The checkpoint schema: weights, optimizer, schedule, progress, RNG."""
        return {
            "method": self.method,
            "checksum": state_checksum(self.method.state_dict()),
            "optimizer": self.optimizer,
            "scheduler": self.scheduler.state_dict(),
            "state": self.state.to_dict(),
            "data_fingerprint": self.data.fingerprint,
            "weights": self.weights,
            "val": val,
            "rng": get_rng_state(),
        }

    def should_stop(self) -> bool:
        patience = self.cfg.train.early_stopping_patience
        return patience is not None and self.state.bad_epochs >= patience

    def restore(self) -> None:
        """Continue from ``last.ckpt``: weights, optimizer, schedule, progress and every RNG."""
        run = self.run
        rest = fabric_load(
            self.fabric,
            run.last,
            {"method": self.method, "optimizer": self.optimizer},
            self.method.state_dict,
        )
        if "state" not in rest:
            raise RunDirError(f"cannot resume {run.path}: its checkpoint predates unipair 0.2")
        if rest.get("data_fingerprint") != self.data.fingerprint:
            raise RunDirError(
                f"cannot resume {run.path}: it was trained on other data (fingerprint "
                f"{rest.get('data_fingerprint')}, now {self.data.fingerprint})"
            )
        if "weights" in rest:  # older checkpoints did not record them
            check_same_weights(rest["weights"], self.weights, f"cannot resume {run.path}")
        self.scheduler.load_state_dict(rest["scheduler"])
        self.state = TrainState.from_dict(rest["state"])
        set_rng_state(rest["rng"])
        self._repair_best()
        if self.fabric.is_global_zero:  # metrics.csv may have been deleted: it is derived
            run.write_metrics(self.state.history)

    def _repair_best(self) -> None:
        """A crash between writing last.ckpt and linking best.ckpt leaves an older best.ckpt:
        the best epoch recorded in last.ckpt decides, and the link is made again."""
        state, run = self.state, self.run
        if state.best_epoch != state.epoch:
            return
        best_epoch = None
        if run.best.is_file():
            try:
                best_epoch = read_checkpoint(run.best)["state"]["epoch"]
            except RunDirError:  # damaged: made again from last.ckpt below
                best_epoch = None
        if best_epoch != state.epoch:
            snapshot_checkpoint(self.fabric, run.last, run.best)

    def test_once(self, stopped_early: bool) -> RunResult:
        """The test split, read once, with the weights of the best validation epoch."""
        fabric, cfg, run, data = self.fabric, self.cfg, self.run, self.data
        best = fabric_load(fabric, run.best, {"method": self.method}, self.method.state_dict)
        summary: dict[str, Any] = {}
        if fabric.is_global_zero:
            test = None
            if cfg.train.test:
                test = self._evaluate_test()
            summary = {
                "method": cfg.method.name,
                "dataset": cfg.dataset.name,
                "seed": cfg.train.seed,
                "data_seed": data.seed,
                "dataset_fingerprint": data.fingerprint,
                "modalities": data.spec.names,
                "monitor": f"val/{cfg.train.monitor}",
                "best_epoch": int(best["state"]["epoch"]),
                "epochs_run": len(self.state.history),
                "stopped_early": stopped_early,
                "val": best["val"],
                "test": test,
                "train_time_s": round(self.state.train_time, 3),
                "wall_time_s": round(time.perf_counter() - self.t_start, 3),
                "world_size": fabric.world_size,
                "precision": fabric.strategy.precision.precision,
                "precision_requested": cfg.fabric.precision,
                "device": str(fabric.device),
                "split_sizes": {
                    "train": len(self.train_set),
                    "val": len(data.val),
                    "test": len(data.test) if cfg.train.test else None,
                },
                **({"heldout": self.heldout_info} if self.heldout_info else {}),
                **{k: data.info[k] for k in ("skipped_rows", "prepared") if k in data.info},
                **({"auxiliary": self.auxiliary} if self.auxiliary else {}),
                **({"weights": self.weights} if self.weights else {}),
                **({"feature_cache": self.feature_cache} if self.feature_cache else {}),
                **environment_info(),
            }
            run.write_summary(summary)
            what = f"test acc {test['acc']:.4f}" if test is not None else "test not run"
            self.reporter.message(
                f"best epoch {summary['best_epoch']} (val {cfg.train.monitor} "
                f"{best['val'][cfg.train.monitor]:.4f}); {what}  -> {run.path}"
            )
        fabric.barrier()
        return RunResult(run.path, summary, self.state.history)

    def _evaluate_test(self) -> dict[str, float]:
        fabric, data = self.fabric, self.data
        loader = make_loader(
            data.test.eval_view(),
            ShardBatchSampler(len(data.test), self.cfg.train.eval_batch_size),
            self.cfg.train.num_workers,
            self.pin,
        )
        metrics = MultimodalMetrics(data.spec.num_classes, self.method.modalities, sync=False)
        test, arrays = predict_split(
            self.method,
            loader,
            metrics.to(fabric.device),
            fabric,
            collect=self.cfg.logging.save_predictions,
        )
        if arrays is not None:
            save_predictions(self.run.predictions, arrays)
        return test
