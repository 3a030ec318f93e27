"""Engine: configuration, the Fabric training loop, checkpoints and run directories.

Names are imported on first use (PEP 562): ``unipair.engine.config`` alone (which the command
line reads) must not load Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unipair.engine.config import RunConfig, load_config
    from unipair.engine.run_dir import RunResult
    from unipair.engine.state import TrainState
    from unipair.engine.trainer import train

__all__ = ["RunConfig", "RunResult", "TrainState", "load_config", "train"]

_LAZY = {
    "RunConfig": "unipair.engine.config",
    "load_config": "unipair.engine.config",
    "RunResult": "unipair.engine.run_dir",
    "TrainState": "unipair.engine.state",
    "train": "unipair.engine.trainer",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups no longer reach __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
