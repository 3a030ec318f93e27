"""unipair: multimodal learning that trains every modality, not just the dominant one.

The public names are imported on first use (PEP 562), so ``import unipair`` and the command
line start without loading torch, Lightning or scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unipair.engine import RunConfig, RunResult, load_config, train
    from unipair.evaluation.evaluate import evaluate

__all__ = ["RunConfig", "RunResult", "evaluate", "load_config", "train"]
__version__ = "0.1.0"

#: public name -> the module that defines it
_LAZY = {
    "RunConfig": "unipair.engine",
    "RunResult": "unipair.engine",
    "evaluate": "unipair.evaluation.evaluate",
    "load_config": "unipair.engine",
    "train": "unipair.engine",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups no longer reach __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
