"""Classification heads."""

from __future__ import annotations

from torch import nn

from unipair.errors import UnknownNameError

__all__ = ["create_head"]


def create_head(
    kind: str, in_dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.0
) -> nn.Module:
    """``linear`` (the default in every paper we follow) or a one-hidden-layer ``mlp``."""
    if kind == "linear":
        return nn.Linear(in_dim, num_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
    raise UnknownNameError(f"unknown head {kind!r}; expected 'linear' or 'mlp'")
