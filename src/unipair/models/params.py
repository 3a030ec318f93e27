"""Named optimizer parameter groups: how a model asks for per-part learning rates."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ParamGroup"]


@dataclass
class ParamGroup:
    """A named optimizer parameter group; its lr is the base lr times ``lr_mult``."""

    name: str
    params: list[nn.Parameter]
    lr_mult: float = 1.0
    weight_decay: float | None = None
