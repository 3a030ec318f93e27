"""``unipair.train``: resolve the config, launch Fabric (one or many processes), run a Trainer."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from lightning_fabric.strategies import DDPStrategy
from lightning_fabric.utilities.imports import _IS_INTERACTIVE

from unipair.engine.config import RunConfig, load_config
from unipair.engine.loop import Trainer
from unipair.engine.precision import resolve_precision, warn_if_emulated
from unipair.engine.run_dir import RunResult
from unipair.errors import ConfigError, RunDirError

__all__ = ["make_fabric", "train"]

# methods may leave parts unused in a step (MLA's visits, missing data): DDP must allow it
_DDP_START = {"ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}
#: strategies ``make_fabric`` sets up as DDP that finds unused parameters
_UNUSED_TOLERANT = {"auto", "ddp", "ddp_find_unused_parameters_true", *_DDP_START}


def make_fabric(cfg: RunConfig) -> Fabric:
    """The Fabric of a run, with the precision resolved (``auto``) and DDP tolerant of unused
    parameters."""
    _check_accelerator(cfg.fabric.accelerator)
    strategy: Any = cfg.fabric.strategy
    if strategy == "auto" and _process_count(cfg) > 1:  # Fabric's choice, unused-tolerant
        strategy = "ddp_fork" if _IS_INTERACTIVE else "ddp"
    if strategy == "ddp":
        strategy = "ddp_find_unused_parameters_true"
    elif strategy in _DDP_START:
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
    precision = resolve_precision(cfg.fabric.precision, cfg.fabric.accelerator)
    fabric = Fabric(
        accelerator=cfg.fabric.accelerator,
        devices=cfg.fabric.devices,
        strategy=strategy,
        precision=precision,  # type: ignore[arg-type]
        num_nodes=cfg.fabric.num_nodes,
        loggers=loggers,
    )
    warn_if_emulated(fabric.strategy.precision.precision, fabric.device.type)
    return fabric


def _check_accelerator(accelerator: str) -> None:
    """A GPU asked for where none is visible is the user's setting, not a bug."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(
            f"--accelerator {accelerator}: no CUDA GPU is visible here (torch {torch.__version__}"
            f", {build}); use --accelerator cpu or auto"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--accelerator mps: Apple's MPS is not available here; use cpu or auto")


def _process_count(cfg: RunConfig) -> int:
    """Processes the run will use (1 where ``devices`` leaves it to Fabric)."""
    devices = cfg.fabric.devices
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, int) or str(devices).isdigit():
        count = int(devices)
    else:
        count = 1
    return max(count, 1) * cfg.fabric.num_nodes


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
        cfg = _resumed_config(Path(resume), cfg)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    _check_freezing_strategy(cfg)
    fabric = make_fabric(cfg)
    return fabric.launch(_fit, cfg, None if resume is None else str(resume))


def _check_freezing_strategy(cfg: RunConfig) -> None:
    """Frozen encoder parts get no gradient; across processes only DDP that looks for unused
    parameters allows that, which is how unipair sets up every DDP strategy it names."""
    encoders = cfg.model.encoders.items()
    frozen = [m for m, enc in encoders if str(enc.options.get("freeze", "none")) != "none"]
    if not frozen or _process_count(cfg) < 2 or cfg.fabric.strategy in _UNUSED_TOLERANT:
        return
    raise ConfigError(
        f"model.encoders.{frozen[0]}.options.freeze with fabric.strategy="
        f"{cfg.fabric.strategy!r} on {_process_count(cfg)} processes: frozen parameters get no "
        "gradient, which distributed training here allows only under DDP with "
        f"find_unused_parameters; use fabric.strategy {', '.join(sorted(_UNUSED_TOLERANT))}, or "
        "freeze: none"
    )


def _resumed_config(run_dir: Path, requested: RunConfig) -> RunConfig:
    """The run's own config; the epoch budget may only grow (a smaller one is ignored), and
    not under a cosine schedule, which is defined over the budget; logging may change."""
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no config.yaml)")
    saved = load_config(run_dir / "config.yaml")
    epochs = requested.train.epochs
    if epochs > saved.train.epochs:
        if saved.optim.schedule == "cosine":
            raise ConfigError(
                f"--epochs {epochs}: {run_dir} uses a cosine schedule over "
                f"{saved.train.epochs} epochs, which a longer budget would restart mid-way; "
                "start a new run instead"
            )
        saved.train.epochs = epochs
    saved.logging = requested.logging
    return saved


def _fit(fabric: Fabric, cfg: RunConfig, resume: str | None) -> RunResult:
    return Trainer(fabric, cfg, resume).fit()
