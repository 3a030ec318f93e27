"""Classification heads, in a registry like encoders and fusions."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from unipair.registry import Registry

__all__ = ["HEADS", "create_head"]

#: name -> factory(in_dim, num_classes, hidden)
HEADS: Registry[Callable[[int, int, int], nn.Module]] = Registry("head")


@HEADS.register("linear")
def linear_head(in_dim: int, num_classes: int, hidden: int) -> nn.Module:
    """The default in every paper we follow."""
    return nn.Linear(in_dim, num_classes)


@HEADS.register("mlp")
def mlp_head(in_dim: int, num_classes: int, hidden: int) -> nn.Module:
    """One hidden layer; its first layer reads the features (MLA's HGM projects it)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def create_head(kind: str, in_dim: int, num_classes: int, hidden: int = 256) -> nn.Module:
    return HEADS.get(kind)(in_dim, num_classes, hidden)
