"""The training loop on Lightning Fabric, and the honest protocol it enforces.

Each epoch trains, then validates. The best epoch is chosen on the validation metric alone. The
test split is read once, after training, with the best checkpoint. Everything a run writes
(config.yaml, metrics.csv, last.ckpt, best.ckpt, summary.json) is written atomically.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric import Fabric
from lightning_fabric.strategies import DDPStrategy
from torch.utils.data import DataLoader

from unipair import datasets
from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import MultimodalData, MultimodalDataset, TensorMultimodalDataset
from unipair.data.missing import missing_masks
from unipair.engine.checkpoint import (
    get_rng_state,
    save_checkpoint,
    set_rng_state,
    snapshot_checkpoint,
)
from unipair.engine.config import RunConfig, load_config
from unipair.engine.optim import build_optimizer, build_scheduler, check_parameter_groups
from unipair.engine.progress import make_reporter
from unipair.engine.run_dir import RunDir, RunResult, default_run_name, environment_info
from unipair.engine.samplers import GlobalBatchSampler, ShardBatchSampler
from unipair.errors import ConfigError, RunDirError
from unipair.evaluation.metrics import MultimodalMetrics
from unipair.io import write_text
from unipair.methods import Method, Prediction, TrainStep
from unipair.methods import create as create_method

__all__ = ["build_method", "load_data", "make_fabric", "predict_split", "train"]

_DDP_START = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


def make_fabric(cfg: RunConfig) -> Fabric:
    strategy: Any = cfg.fabric.strategy
    if strategy in _DDP_START:  # methods may leave parts unused in a step (MLA, missing data)
        strategy = DDPStrategy(start_method=_DDP_START[strategy], find_unused_parameters=True)
    loggers = []
    if cfg.logging.tensorboard:
        try:
            from lightning_fabric.loggers import TensorBoardLogger
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "logging.tensorboard needs: pip install 'unipair[tensorboard]'"
            ) from e
        loggers.append(TensorBoardLogger(root_dir=cfg.out, name="tensorboard"))
    return Fabric(
        accelerator=cfg.fabric.accelerator,
        devices=cfg.fabric.devices,
        strategy=strategy,
        precision=cfg.fabric.precision,  # type: ignore[arg-type]
        num_nodes=cfg.fabric.num_nodes,
        loggers=loggers,
    )


def load_data(cfg: RunConfig) -> MultimodalData:
    """The dataset with any configured training-time missing modalities applied."""
    data = datasets.create(cfg.dataset.name, **cfg.dataset.options)
    rate = cfg.dataset.train_missing_rate
    if rate and (not isinstance(rate, Mapping) or any(rate.values())):
        if not isinstance(data.train, TensorMultimodalDataset):
            raise ConfigError("dataset.train_missing_rate needs an in-memory dataset")
        masks = missing_masks(len(data.train), data.spec.names, rate, seed=cfg.train.seed + 7919)
        data.train = data.train.with_missing(masks)
        data.info["train_missing_rate"] = rate
    return data


def build_method(cfg: RunConfig, data: MultimodalData) -> Method:
    return create_method(cfg.method.name, data.spec, cfg.model, **cfg.method.hparams)


def _loader(ds: MultimodalDataset, sampler: Any, workers: int, pin: bool) -> DataLoader:
    return DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=_identity,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


def _on_device(batch: MultimodalBatch, fabric: Fabric, non_blocking: bool = False):
    """Move a batch to the device, in the precision's input dtype (``bf16-true`` etc.)."""
    return fabric.strategy.precision.convert_input(
        batch.to(fabric.device, non_blocking=non_blocking)
    )


def _identity(batch: MultimodalBatch) -> MultimodalBatch:
    return batch  # datasets return whole batches through __getitems__


def predict_split(
    method: Method,
    loader: DataLoader,
    metrics: MultimodalMetrics,
    fabric: Fabric,
    collect: bool = False,
    transform: Any = None,
) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """Evaluate ``method`` on every batch of ``loader``; optionally keep per-sample outputs."""
    method.eval()
    metrics.reset()
    kept: list[tuple[MultimodalBatch, Prediction]] = []
    with torch.no_grad(), fabric.autocast():
        for batch in loader:
            batch = _on_device(batch, fabric)
            if transform is not None:
                batch = transform(batch)
            pred = method.predict(batch)
            metrics.update(pred, batch.labels)
            if collect:
                kept.append((batch.to("cpu"), _to_cpu(pred)))
    method.train()
    return metrics.compute(), (_stack(kept) if collect else None)


def _to_cpu(p: Prediction) -> Prediction:
    return Prediction(
        p.logits.float().cpu(),
        {m: z.float().cpu() for m, z in p.modality_logits.items()},
        {m: x.cpu() for m, x in p.present.items()},
        {k: v.float().cpu() for k, v in p.extras.items()},
    )


def _stack(kept: list[tuple[MultimodalBatch, Prediction]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "labels": torch.cat([b.labels for b, _ in kept]).numpy(),
        "index": torch.cat([b.index for b, _ in kept]).numpy(),
        "logits": torch.cat([p.logits for _, p in kept]).numpy(),
    }
    first = kept[0][1]
    for m in first.modality_logits:
        out[f"logits/{m}"] = torch.cat([p.modality_logits[m] for _, p in kept]).numpy()
    for m in first.present:
        out[f"present/{m}"] = torch.cat([p.present[m] for _, p in kept]).numpy()
    for k in first.extras:
        out[f"extra/{k}"] = torch.cat([p.extras[k] for _, p in kept]).numpy()
    return out


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from unipair.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def train(
    config: RunConfig | Mapping[str, Any] | str | Path,
    resume: str | Path | None = None,
) -> RunResult:
    """Train one method on one dataset and evaluate it; see :class:`RunConfig`.

    ``config`` is a RunConfig, a mapping, or a YAML path. ``resume`` continues an interrupted
    run directory from its ``last.ckpt`` (its own config.yaml is used; ``config`` may only raise
    the epoch budget).
    """
    if isinstance(config, RunConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = RunConfig.from_mapping(config)
    else:
        cfg = load_config(config)
    if resume is not None:
        saved = load_config(Path(resume) / "config.yaml")
        if cfg.train.epochs > saved.train.epochs:
            saved.train.epochs = cfg.train.epochs
        saved.logging = cfg.logging
        cfg = saved
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    fabric = make_fabric(cfg)
    return fabric.launch(_fit, cfg, None if resume is None else str(resume))


def _fit(fabric: Fabric, cfg: RunConfig, resume: str | None) -> RunResult:
    t_start = time.perf_counter()
    fabric.seed_everything(cfg.train.seed, verbose=False)
    data = load_data(cfg)
    method = build_method(cfg, data)
    groups = method.parameter_groups()
    check_parameter_groups(method, groups)
    optimizer = build_optimizer(groups, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.train.epochs)
    module, optimizer = fabric.setup(method, optimizer)

    if resume is not None:
        path = Path(resume)
    else:
        name = cfg.name or default_run_name(cfg.dataset.name, cfg.method.name, cfg.train.seed)
        path = Path(cfg.out) / fabric.broadcast(name, src=0)
    run = RunDir(path)
    # rank 0 looks before anyone writes, and every rank acts on its answer
    taken = fabric.broadcast(run.path.exists() and any(run.path.iterdir()), src=0)
    if resume is None and taken:
        hint = "it is finished" if run.is_finished() else f"resume it with --resume {run.path}"
        raise RunDirError(f"run directory {run.path} already exists ({hint})")
    if fabric.is_global_zero:
        run.path.mkdir(parents=True, exist_ok=True)
        write_text(run.config, cfg.to_yaml())
    fabric.barrier()

    history: list[dict[str, Any]] = []
    start_epoch, best_value, best_epoch, bad_epochs, global_step = 0, None, -1, 0, 0
    train_time = 0.0
    if resume is not None:
        if not run.last.is_file():
            raise RunDirError(f"cannot resume: {run.last} does not exist")
        rest = fabric.load(run.last, {"method": method, "optimizer": optimizer})
        scheduler.load_state_dict(rest["scheduler"])
        start_epoch = rest["epoch"] + 1
        best_value, best_epoch, bad_epochs = rest["best_value"], rest["best_epoch"], rest["bad"]
        history, global_step, train_time = rest["history"], rest["global_step"], rest["train_time"]
        set_rng_state(rest["rng"])

    world, rank = fabric.world_size, fabric.global_rank
    pin = fabric.device.type == "cuda"
    sampler = GlobalBatchSampler(
        len(data.train), cfg.train.batch_size, cfg.train.seed, rank, world, cfg.train.drop_last
    )
    if len(sampler) == 0:
        raise ConfigError(
            f"train split has {len(data.train)} samples: no batch of size "
            f"{cfg.train.batch_size} with drop_last={cfg.train.drop_last}"
        )
    eval_bs = max(1, cfg.train.eval_batch_size // world)
    train_loader = _loader(data.train, sampler, cfg.train.num_workers, pin)
    val_loader = _loader(data.val, ShardBatchSampler(len(data.val), eval_bs, rank, world), 0, pin)
    metrics = MultimodalMetrics(data.spec.num_classes, method.modalities).to(fabric.device)

    def clip() -> None:
        if cfg.optim.grad_clip is not None:
            fabric.clip_gradients(module, optimizer, max_norm=cfg.optim.grad_clip)

    step = TrainStep(
        module,
        optimizer,
        backward=fabric.backward,
        clip=clip,
        all_reduce=lambda t: fabric.all_reduce(t, reduce_op="mean"),
        world_size=world,
        seed=cfg.train.seed,
    )
    step.global_step = global_step
    sign = -1.0 if cfg.train.monitor == "loss" else 1.0
    reporter = make_reporter(cfg.logging.progress, fabric.is_global_zero)
    stopped_early = False
    epochs = cfg.train.epochs
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        method.train()
        method.on_train_epoch_start(epoch)
        step.epoch = epoch
        reporter.start_epoch(epoch, epochs, len(sampler))
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # a method may log a key in some batches only
        for i, batch in enumerate(train_loader):
            batch = _on_device(batch, fabric, non_blocking=pin)
            logs = method.training_step(batch, step)
            step.global_step += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
                counts[k] = counts.get(k, 0) + 1
            reporter.advance(float(logs["loss"]) if "loss" in logs and i % 10 == 0 else None)
        row: dict[str, Any] = {"epoch": epoch}
        for k, v in sums.items():
            row[f"train/{k}"] = float(fabric.all_reduce(v / counts[k], reduce_op="mean"))
        for g in optimizer.param_groups:
            row[f"lr/{g['name']}"] = g["lr"]
        scheduler.step()
        epoch_train_time = time.perf_counter() - t0
        train_time += epoch_train_time
        val, _ = predict_split(method, val_loader, metrics, fabric)
        row.update({f"val/{k}": v for k, v in val.items()})
        row["time/train_s"] = round(epoch_train_time, 4)
        row["time/epoch_s"] = round(time.perf_counter() - t0, 4)
        history.append(row)
        # ties on the monitored metric go to the lower validation loss
        score = [sign * val[cfg.train.monitor], -val["loss"]]
        improved = best_value is None or (math.isfinite(score[0]) and score > best_value)
        if improved:
            best_value, best_epoch, bad_epochs = score, epoch, 0
        else:
            bad_epochs += 1
        patience = cfg.train.early_stopping_patience
        stopped_early = patience is not None and bad_epochs >= patience
        save_checkpoint(
            fabric,
            run.last,
            {
                "method": method,
                "optimizer": optimizer,
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "val": val,
                "best_value": best_value,
                "best_epoch": best_epoch,
                "bad": bad_epochs,
                "history": history,
                "global_step": step.global_step,
                "train_time": train_time,
                "rng": get_rng_state(),
            },
        )
        if improved:  # best.ckpt is last.ckpt of the best epoch
            snapshot_checkpoint(fabric, run.last, run.best)
        if fabric.is_global_zero:
            run.write_metrics(history)
        fabric.log_dict({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
        reporter.end_epoch(row, improved)
        if stopped_early:
            reporter.message(f"early stop: no improvement in {patience} epochs")
            break
    reporter.close()

    # The test split, read once, with the weights of the best validation epoch.
    best = fabric.load(run.best, {"method": method})
    summary: dict[str, Any] = {}
    if fabric.is_global_zero:
        test_loader = _loader(
            data.test, ShardBatchSampler(len(data.test), cfg.train.eval_batch_size), 0, pin
        )
        test_metrics = MultimodalMetrics(data.spec.num_classes, method.modalities, sync=False).to(
            fabric.device
        )
        test, arrays = predict_split(
            method, test_loader, test_metrics, fabric, collect=cfg.logging.save_predictions
        )
        if arrays is not None:
            _save_npz(run.predictions, arrays)
        summary = {
            "method": cfg.method.name,
            "dataset": cfg.dataset.name,
            "seed": cfg.train.seed,
            "data_seed": data.seed,
            "dataset_fingerprint": data.fingerprint,
            "modalities": data.spec.names,
            "monitor": f"val/{cfg.train.monitor}",
            "best_epoch": int(best["epoch"]),
            "epochs_run": len(history),
            "stopped_early": stopped_early,
            "val": best["val"],
            "test": test,
            "train_time_s": round(train_time, 3),
            "wall_time_s": round(time.perf_counter() - t_start, 3),
            "world_size": world,
            "precision": cfg.fabric.precision,
            "device": str(fabric.device),
            "split_sizes": {s: len(data.split(s)) for s in ("train", "val", "test")},
            **environment_info(),
        }
        run.write_summary(summary)
        reporter.message(
            f"best epoch {summary['best_epoch']} (val {cfg.train.monitor} "
            f"{best['val'][cfg.train.monitor]:.4f}); test acc {test['acc']:.4f}  -> {run.path}"
        )
    fabric.barrier()
    return RunResult(run.path, summary, history)
