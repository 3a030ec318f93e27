"""Optimizer and learning-rate schedule from a method's named parameter groups."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from unipair.engine.config import OptimConfig
from unipair.models.params import ParamGroup

__all__ = ["build_optimizer", "build_scheduler", "check_parameter_groups"]


def check_parameter_groups(module: nn.Module, groups: Sequence[ParamGroup]) -> None:
    """Every trainable parameter must sit in exactly one group, and group names be unique."""
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"parameter group names repeat: {names}")
    owner: dict[int, str] = {}
    for g in groups:
        for p in g.params:
            if id(p) in owner:
                raise ValueError(f"a parameter is in both groups {owner[id(p)]!r} and {g.name!r}")
            owner[id(p)] = g.name
    orphans = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in owner]
    if orphans:
        raise ValueError(f"trainable parameters in no optimizer group: {orphans[:5]}")


def build_optimizer(groups: Sequence[ParamGroup], cfg: OptimConfig) -> torch.optim.Optimizer:
    param_groups = []
    for g in groups:
        if not g.params:
            continue
        param_groups.append(
            {
                "params": g.params,
                "lr": cfg.lr * g.lr_mult,
                "weight_decay": cfg.weight_decay if g.weight_decay is None else g.weight_decay,
                "name": g.name,
                "lr_mult": g.lr_mult,
            }
        )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(param_groups, lr=cfg.lr)
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch multiplier on every group's initial lr, so lr multipliers are preserved."""

    def factor(epoch: int) -> float:
        if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        if cfg.schedule == "step":
            return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        if cfg.schedule == "cosine":
            span = max(epochs - cfg.warmup_epochs, 1)
            t = (epoch - cfg.warmup_epochs) / span
            return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
