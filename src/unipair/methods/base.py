"""The ``Method`` contract: what every learning method implements, and what the engine gives it.

A method is an ``nn.Module`` that owns its networks and extra state (buffers). The engine asks it
for optimizer parameter groups, calls ``training_step`` once per batch with a :class:`TrainStep`
handle (manual optimization, as in Lightning: the method may run several
forward/backward/step cycles per batch and edit gradients in between), and calls ``predict`` for
evaluation. Differentiable computation goes through ``step.forward(...)``, which routes to the
method's ``forward`` through the distributed wrapper, so gradients synchronise under DDP.

Optional hooks, each a no-op by default, give a method what published baselines need without
touching the engine:

* ``after_backward(batch, outputs, step)``: between backward and the optimizer step of the
  joint training step (gradient modulation: OGM-GE, AGM, InfoReg).
* ``on_train_epoch_start(step, data)``: before each epoch, with :class:`EpochData` to iterate
  the training rows (probe: no augmentation, eval mode, no gradient) and a held-out part carved
  from train whose size the method declares with ``heldout_fraction`` (PMR prototypes,
  G-Blending weights, Re-learning purity). The held-out part is never the validation split.
* ``on_validation_end(step, metrics)``: after each epoch's validation (MSLR, MSES).
* ``auxiliary_runs()`` / ``attach_auxiliary(runs)``: frozen models of other finished runs
  (UMT's unimodal teachers), resolved by the engine with the same data and seed.

Losses should reduce per-sample values with :meth:`TrainStep.mean`, which normalises by the
global row count of the optimizer step: then an uneven last batch under DDP, and gradient
accumulation (``train.accumulate``), give exactly the gradient of one large batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from unipair.config_base import StrictModel
from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.models.multimodal import ModelConfig
from unipair.models.params import ParamGroup

__all__ = [
    "AuxRun",
    "EpochData",
    "Method",
    "MethodHparams",
    "MethodTags",
    "ParamGroup",
    "Prediction",
    "TrainStep",
    "row_counts",
]

#: ``TrainStep.mean(..., over=ANY)``: rows where at least one modality is present
ANY = "*"


class MethodHparams(StrictModel):
    """Base of every method's hyperparameters; unknown keys are rejected by name."""


@dataclass(frozen=True)
class MethodTags:
    """What a method declares about itself; the engine and the conformance kit read it.

    ``accumulation``: gradient accumulation is exact (one optimizer step per batch, losses
    reduced with :meth:`TrainStep.mean`, no per-batch statistics); otherwise the engine rejects
    ``train.accumulate > 1`` with ``accumulation_note`` as the reason. ``ddp_exact``: N processes
    compute what one process computes on the same global batches. ``dropout_keys``:
    hyperparameters that draw random masks per process; the DDP check sets them to 0.
    """

    accumulation: bool = True
    accumulation_note: str = ""
    ddp_exact: bool = True
    dropout_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuxRun:
    """A finished run a method depends on, loaded frozen: which method, which hyperparameters.

    The engine finds it among finished run directories with the same data fingerprint and seed
    (``method.aux`` in the config maps each key to a run directory; ``compare`` trains them).
    """

    method: str
    hparams: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """Fused logits [B, C], one logit vector per modality, the presence masks, and extras.

    ``per_sample`` holds [B] values that validation and test metrics average (as
    ``<key>``, e.g. MLA's ``fusion_weight/<m>``); ``arrays`` holds [B, ...] values that only go
    into ``test_predictions.npz`` (e.g. PgM's paired-head logits).
    """

    logits: Tensor
    modality_logits: dict[str, Tensor]
    present: dict[str, Tensor]
    per_sample: dict[str, Tensor] = field(default_factory=dict)
    arrays: dict[str, Tensor] = field(default_factory=dict)


def row_counts(batches: Iterable[MultimodalBatch]) -> dict[str, float]:
    """Rows, rows with any modality present (key ``ANY``) and present rows per modality.

    The engine sums these over the micro-batches of an optimizer step and over processes, so
    :meth:`TrainStep.mean` can normalise by the global count before any forward pass.
    """
    counts: dict[str, float] = {"": 0.0, ANY: 0.0}
    for b in batches:
        counts[""] += len(b)
        any_present = torch.zeros(len(b), dtype=torch.bool)
        for m, p in b.present.items():
            p = p.cpu()
            counts[m] = counts.get(m, 0.0) + float(p.sum())
            any_present |= p
        counts[ANY] += float(any_present.sum())
    return counts


class EpochData:
    """What ``on_train_epoch_start`` may read: the training rows and the held-out part.

    Iterating either puts the method in eval mode under ``torch.no_grad()`` and restores its
    mode afterwards (iterate with a ``for`` loop so the restore runs). Under DDP each process
    iterates its own shard; combine statistics with ``step.all_reduce_sum``.
    """

    def __init__(
        self,
        method: nn.Module,
        probe: Callable[[], Iterable[MultimodalBatch]],
        heldout: Callable[[], Iterable[MultimodalBatch]] | None = None,
        heldout_size: int = 0,
    ) -> None:
        self._method = method
        self._probe = probe
        self._heldout = heldout
        self.heldout_size = heldout_size

    def probe(self) -> Iterator[MultimodalBatch]:
        """The training rows the optimizer sees (the held-out part excluded), unaugmented."""
        return self._eval(self._probe())

    def heldout(self) -> Iterator[MultimodalBatch]:
        """The part carved from train for this method (its ``heldout_fraction``)."""
        if self._heldout is None:
            raise RuntimeError(
                "no held-out part: the method must declare heldout_fraction() > 0 to get one"
            )
        return self._eval(self._heldout())

    def _eval(self, batches: Iterable[MultimodalBatch]) -> Iterator[MultimodalBatch]:
        was_training = self._method.training
        self._method.eval()
        try:
            with torch.no_grad():
                yield from batches
        finally:
            self._method.train(was_training)


class TrainStep:
    """The manual-optimization handle passed to ``Method.training_step``.

    The engine builds one around Lightning Fabric; :meth:`local` builds one for plain PyTorch
    (tests, notebooks). Methods only ever talk to this object, never to Fabric directly. With
    gradient accumulation the engine feeds ``micro_batches`` micro-batches per optimizer step:
    ``zero_grad`` acts on the first, ``step`` on the last, and backward skips the gradient
    all-reduce in between.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        backward: Callable[[Tensor], None] | None = None,
        clip: Callable[[], None] | None = None,
        all_reduce: Callable[[Tensor], Tensor] | None = None,
        no_sync: Callable[[], AbstractContextManager[Any]] | None = None,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        self._module = module
        self.optimizer = optimizer
        self._backward = backward or (lambda loss: loss.backward())
        self._clip = clip or (lambda: None)
        self._all_reduce = all_reduce or (lambda t: t)  # mean over processes
        self._no_sync = no_sync or nullcontext
        self.world_size = world_size
        self.seed = seed  # for method-side randomness that must agree across replicas
        self.epoch = 0
        self.global_step = 0
        #: position in the epoch: this optimizer step's index and the epoch's step count
        #: (schedules within an epoch, e.g. MLA's reference alpha); 0 of 1 outside the engine
        self.batch = 0
        self.batches = 1
        #: global row counts of the current optimizer step (see ``row_counts``); set by the
        #: engine, empty in plain PyTorch where each batch is its own step
        self.counts: dict[str, Tensor] = {}
        self.micro_batch = 0
        self.micro_batches = 1

    @classmethod
    def local(
        cls, method: Method, optimizer: torch.optim.Optimizer, grad_clip: float | None = None
    ) -> TrainStep:
        clip = None
        if grad_clip is not None:

            def clip() -> None:
                torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)

        return cls(method, optimizer, clip=clip)

    # ---- optimisation ---------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the method's ``forward`` through the (possibly distributed) wrapper."""
        return self._module(*args, **kwargs)

    def backward(self, loss: Tensor) -> None:
        last = self.micro_batch == self.micro_batches - 1
        with nullcontext() if last else self._no_sync():
            self._backward(loss)

    def zero_grad(self) -> None:
        if self.micro_batch == 0:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Clip gradients (if configured) and take an optimizer step (on the last micro-batch)."""
        if self.micro_batch == self.micro_batches - 1:
            self._clip()
            self.optimizer.step()

    # ---- reductions -----------------------------------------------------------------------
    def all_reduce_mean(self, t: Tensor) -> Tensor:
        """Mean of ``t`` across processes (identity on one process)."""
        return self._all_reduce(t)

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum of ``t`` across processes (identity on one process)."""
        return self._all_reduce(t) * self.world_size if self.world_size > 1 else t

    def count(
        self, mask: Tensor | None = None, over: str | None = None, *, rows: Tensor | None = None
    ) -> Tensor:
        """Rows of this optimizer step over all processes and micro-batches: every row, or the
        rows where modality ``over`` is present (``over="*"``: any modality). ``mask`` (or,
        for every row, ``rows``: the local row count) is this process's part. Precomputed by
        the engine; computed with one all-reduce otherwise."""
        key = over if over is not None else ("" if mask is None else None)
        if key is not None and key in self.counts:
            return self.counts[key]
        if self.micro_batches > 1:
            raise RuntimeError(
                f"TrainStep.count(over={over!r}): no precomputed count for this mask, so it "
                "cannot be normalised across accumulated micro-batches; pass over=<modality> "
                "or '*', or declare MethodTags(accumulation=False)"
            )
        local = mask.sum() if mask is not None else rows
        if local is None:
            raise ValueError("TrainStep.count needs a mask or the local row count")
        return self.all_reduce_sum(local.to(torch.float32))

    def mean(self, values: Tensor, mask: Tensor | None = None, over: str | None = None) -> Tensor:
        """Mean of per-sample ``values`` [B] over the optimizer step's rows (see :meth:`count`).

        Scaled so that DDP's average of gradients over processes, and their sum over
        accumulated micro-batches, is the gradient of the mean over the whole global batch.
        """
        total = (values * mask.to(values.dtype)).sum() if mask is not None else values.sum()
        if mask is None and over in (None, ANY) and not self.counts and self.world_size == 1:
            return total / max(values.shape[0], 1)  # one process, every row: the batch mean
        rows = values.new_tensor(float(values.shape[0]))
        count = self.count(mask, over, rows=rows).to(values.dtype)
        return total * self.world_size / count.clamp_min(1.0)

    def generator(self, salt: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
        """A generator seeded by (run seed, global step, salt): every process, and a resumed
        run, draws the same numbers without touching the global RNG."""
        base = self.seed * 1_000_003 + self.global_step
        g = torch.Generator(device)
        g.manual_seed(base if salt == 0 else hash((base, salt)) & (2**63 - 1))
        return g


class Method(nn.Module, ABC):
    """Base class. Subclasses set ``Hparams`` and ``description`` and implement
    ``training_step`` and ``predict``; registration fails if either is missing."""

    name: ClassVar[str] = ""
    Hparams: ClassVar[type[MethodHparams]] = MethodHparams
    #: one line for ``unipair methods``
    description: ClassVar[str] = ""
    tags: ClassVar[MethodTags] = MethodTags()

    def __init__(self, task: TaskSpec, model: ModelConfig, hparams: MethodHparams) -> None:
        super().__init__()
        self.task = task
        self.model_config = model
        self.hparams = hparams
        #: frozen models of the runs named by ``auxiliary_runs`` (not submodules: never saved,
        #: never optimised)
        self.auxiliary: dict[str, Method] = {}

    # ---- training -------------------------------------------------------------------------
    def parameter_groups(self) -> list[ParamGroup]:
        """Optimizer groups; every parameter must be in exactly one. Frozen parameters are
        included: an encoder's ``freeze`` changes per epoch (``until_epoch:N``), and a
        parameter without a gradient is skipped by the optimizer, weight decay included."""
        return [ParamGroup("all", list(self.parameters()))]

    @abstractmethod
    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        """Update the parameters on one batch; return detached scalars to log (with "loss").

        Under gradient accumulation the engine sums the logs of a step's micro-batches, so
        logged losses should come from :meth:`TrainStep.mean`.
        """

    def after_backward(
        self, batch: MultimodalBatch, outputs: Any, step: TrainStep
    ) -> dict[str, Tensor]:
        """Called by single-cycle training steps between backward and the optimizer step, with
        the forward outputs; may edit gradients (OGM-GE). Returns scalars to log."""
        return {}

    def on_train_epoch_start(self, step: TrainStep, data: EpochData) -> None:
        """Called before each training epoch, in train mode (per-epoch state, data passes)."""

    def on_validation_end(self, step: TrainStep, metrics: Mapping[str, float]) -> None:
        """Called after each epoch's validation with its metrics (identical on every process)."""

    def accumulation_problem(self) -> str | None:
        """Why this configuration cannot accumulate gradients exactly (None: it can); the
        engine refuses ``train.accumulate > 1`` with this reason."""
        return None if self.tags.accumulation else self.tags.accumulation_note or "per-batch"

    def heldout_fraction(self) -> float:
        """Fraction of the training split to hold out from the optimizer for this method's own
        between-epoch use (seeded, class-stratified, recorded in the run); 0 means none."""
        return 0.0

    def auxiliary_runs(self) -> dict[str, AuxRun]:
        """Finished runs this method needs frozen, by key (e.g. ``teacher/audio``)."""
        return {}

    def attach_auxiliary(self, runs: Mapping[str, Method]) -> None:
        """Receive the frozen methods of ``auxiliary_runs``, in eval mode on the device."""
        self.auxiliary = dict(runs)

    # ---- inference ------------------------------------------------------------------------
    @abstractmethod
    def predict(self, batch: MultimodalBatch) -> Prediction:
        """Fused and per-modality logits; called in eval mode under ``torch.no_grad``."""

    def modality_features(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        """Each modality's encoder representation [B, d] (pooled; zeros where missing), read
        the same way for every method: linear probes fit on it measure what each modality's
        encoder learned, whatever head the method trains on top (``unipair.evaluation.probes``).
        """
        raise NotImplementedError(f"method {self.name!r} does not expose modality features")

    def shared_embeddings(self, batch: MultimodalBatch) -> dict[str, Tensor] | None:
        """Per-modality embeddings [B, d] of one width, the representation the method hands
        on to what it shares or fuses (MLA's shared-head input, PgM's reconstructions, the
        fusion input of joint training), for the modality gap
        (``unipair.evaluation.modality_gap``); None when the method has none."""
        return None

    @property
    def embedding_space(self) -> str:
        """What :meth:`shared_embeddings` are, in words, and whether one set of weights reads
        every modality's (a gap between separately-read spaces is expected, not a defect)."""
        return ""

    # ---- helpers --------------------------------------------------------------------------
    def modality_encoders(self) -> dict[str, nn.Module]:
        """The encoder that reads each modality's raw input: the entries of every submodule
        ``encoders`` (an ``nn.ModuleDict`` keyed by modality, the convention of every built-in
        method). The engine records their weights and may feed them cached features
        (``train.feature_cache``); a modality read by two different encoders is left out.
        Override it if your method keeps its encoders otherwise."""
        found: dict[str, list[nn.Module]] = {}
        for name, module in self.named_modules():
            if name.rsplit(".", 1)[-1] != "encoders" or not isinstance(module, nn.ModuleDict):
                continue
            for m, encoder in module.items():
                if m in self.modalities and all(e is not encoder for e in found.get(m, [])):
                    found.setdefault(m, []).append(encoder)
        return {m: encs[0] for m, encs in found.items() if len(encs) == 1}

    @property
    def modalities(self) -> list[str]:
        """The modalities this method reads and reports on."""
        return self.task.names


def check_method_class(cls: type[Method], name: str) -> None:
    """What registration requires of a method class: a subclass of :class:`Method` with every
    abstract hook implemented, a ``MethodHparams`` model, a description and ``MethodTags``."""
    problems: list[str] = []
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"method {name!r}: {cls!r} is not a subclass of unipair.methods.Method")
    missing: Sequence[str] = sorted(getattr(cls, "__abstractmethods__", ()))
    if missing:
        problems.append(f"does not implement {', '.join(missing)}")
    if not (isinstance(cls.Hparams, type) and issubclass(cls.Hparams, MethodHparams)):
        problems.append("Hparams must be a subclass of MethodHparams")
    if not cls.description:
        problems.append("has no description (one line for `unipair methods`)")
    if not isinstance(cls.tags, MethodTags):
        problems.append("tags must be a MethodTags")
    if problems:
        raise TypeError(f"method {name!r} ({cls.__qualname__}) " + "; ".join(problems))
