"""The ``Method`` contract: what every learning method implements, and what the trainer gives it.

A method is an ``nn.Module`` that owns its networks and extra state (buffers). The trainer asks it
for optimizer parameter groups, calls ``training_step`` once per batch with a :class:`TrainStep`
handle (manual optimization, as in Lightning: the method may run several
forward/backward/step cycles per batch and edit gradients in between), and calls ``predict`` for
evaluation. Differentiable computation goes through ``step.forward(...)``, which routes to the
method's ``forward`` through the distributed wrapper, so gradients synchronise under DDP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from unipair.config_base import StrictModel
from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.models.multimodal import ModelConfig

__all__ = [
    "Method",
    "MethodHparams",
    "ParamGroup",
    "Prediction",
    "TrainStep",
]


class MethodHparams(StrictModel):
    """Base of every method's hyperparameters; unknown keys are rejected by name."""


@dataclass
class ParamGroup:
    """A named optimizer parameter group; its lr is the base lr times ``lr_mult``."""

    name: str
    params: list[nn.Parameter]
    lr_mult: float = 1.0
    weight_decay: float | None = None


@dataclass
class Prediction:
    """Fused logits [B, C], one logit vector per modality, the presence masks, and extras.

    ``extras`` holds method-specific per-sample tensors with a leading batch dimension (MLA's
    fusion weights, PgM's uni-head logits); evaluation aggregates them.
    """

    logits: Tensor
    modality_logits: dict[str, Tensor]
    present: dict[str, Tensor]
    extras: dict[str, Tensor] = field(default_factory=dict)


class TrainStep:
    """The manual-optimization handle passed to ``Method.training_step``.

    The engine builds one around Lightning Fabric; :meth:`local` builds one for plain PyTorch
    (tests, notebooks). Methods only ever talk to this object, never to Fabric directly.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        backward: Callable[[Tensor], None] | None = None,
        clip: Callable[[], None] | None = None,
        all_reduce: Callable[[Tensor], Tensor] | None = None,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        self._module = module
        self.optimizer = optimizer
        self._backward = backward or (lambda loss: loss.backward())
        self._clip = clip or (lambda: None)
        self._all_reduce = all_reduce or (lambda t: t)
        self.world_size = world_size
        self.seed = seed  # for method-side randomness that must agree across replicas
        self.epoch = 0
        self.global_step = 0

    @classmethod
    def local(
        cls, method: Method, optimizer: torch.optim.Optimizer, grad_clip: float | None = None
    ) -> TrainStep:
        clip = None
        if grad_clip is not None:

            def clip() -> None:
                torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)

        return cls(method, optimizer, clip=clip)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method's ``forward`` through the (possibly distributed) wrapper."""
        return self._module(*args, **kwargs)

    def backward(self, loss: Tensor) -> None:
        self._backward(loss)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Clip gradients (if configured) and take an optimizer step."""
        self._clip()
        self.optimizer.step()

    def all_reduce_mean(self, t: Tensor) -> Tensor:
        """Mean of ``t`` across processes (identity on one process)."""
        return self._all_reduce(t)


class Method(nn.Module):
    """Base class. Subclasses set ``name``, ``Hparams`` and implement the three hooks below."""

    name: ClassVar[str] = ""
    Hparams: ClassVar[type[MethodHparams]] = MethodHparams
    #: one line for ``unipair methods``
    description: ClassVar[str] = ""

    def __init__(self, task: TaskSpec, model: ModelConfig, hparams: MethodHparams) -> None:
        super().__init__()
        self.task = task
        self.model_config = model
        self.hparams = hparams

    # ---- training -------------------------------------------------------------------------
    def parameter_groups(self) -> list[ParamGroup]:
        """Optimizer groups; every trainable parameter must be in exactly one."""
        return [ParamGroup("all", [p for p in self.parameters() if p.requires_grad])]

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        """Update the parameters on one batch; return detached scalar losses to log."""
        raise NotImplementedError

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (e.g. to reset per-epoch state)."""

    # ---- inference ------------------------------------------------------------------------
    def predict(self, batch: MultimodalBatch) -> Prediction:
        """Fused and per-modality logits; called in eval mode under ``torch.no_grad``."""
        raise NotImplementedError

    # ---- helpers --------------------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        """The modalities this method reads and reports on."""
        return self.task.names
