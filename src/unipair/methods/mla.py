"""``mla``: Multimodal Learning with Alternating Unimodal Adaptation.

Zhang, Yoon, Bansal, Yao: "Multimodal Representation Learning by Alternating Unimodal
Adaptation", CVPR 2024. Three parts:

1. *Alternating unimodal learning.* One encoder per modality, one head g shared by all. Each
   batch visits the modalities one after another; a visit trains one encoder and g on that
   modality alone (its own forward, cross-entropy, backward and optimizer step), so no modality
   can lean on another and only one modality's graph is alive at a time. A sample missing m
   simply sits out m's visit: paired data is not needed.
2. *Head gradient modification (HGM).* So that g does not forget the modalities visited
   earlier, the gradient G of g's (first) weight becomes G P before each step, where P is an
   orthogonal-weight-modification projector (Zeng et al., 2019, "Continual learning of
   context-dependent processing in neural networks") maintained by recursive least squares from
   the batch-mean feature r of every visit: k = P r, P <- P - k k^T / (alpha + r^T k). P is the
   inverse of I + (1/alpha) sum r r^T, so directions the head has already been fitted on are
   damped and g's outputs on earlier modalities' mean features are (nearly) preserved.
3. *Test-time dynamic fusion.* Each modality goes through g alone; the fused logits weight
   them per sample by softmax over modalities of -entropy / T: confident modalities count more.

Design decisions (see docs/methods/mla.md):

* Head bias: by default (``hgm_bias: augment``) the bias is treated as the weight of an input
  fixed at 1, i.e. P is (d+1) x (d+1) over [r; 1] and [G, g_b] becomes [G, g_b] P. Only then is
  g(r_old) = W r_old + b really preserved; ``hgm_bias: free`` leaves the bias gradient unmodified
  (d x d projector).
* MLP head: HGM applies to its first layer, whose input is the feature; later layers are free.
* DDP: every process makes the same visits (a visit is skipped only when the all-reduced count
  of present rows is 0; a process without a present row takes part with a zero-weight loss),
  the loss is normalised by the global present count so averaged gradients equal the
  single-process ones, and r is the global mean feature, so every replica holds the same P.
* The public reference code's projection never executes (``GSPlugin.before_update`` receives
  the ``fc_out`` module itself, whose parameter names are ``weight``/``bias``, but checks for
  ``"module.weight"``); it would also have rescaled P by its Frobenius norm. Ours follows the
  OWM/RLS form above.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.errors import ConfigError
from unipair.methods.base import (
    EpochData,
    Method,
    MethodHparams,
    MethodTags,
    ParamGroup,
    Prediction,
    TrainStep,
)
from unipair.methods.common import cross_entropy
from unipair.methods.registry import register_method
from unipair.models.heads import create_head
from unipair.models.multimodal import ModelConfig, build_encoders, encode_present

__all__ = [
    "MLA",
    "FusionMode",
    "MLAHparams",
    "fuse_logits",
    "fusion_weights",
    "owm_update",
]

FusionMode = Literal["entropy", "mean", "fixed", "batch_entropy"]


class MLAHparams(MethodHparams):
    order: Literal["fixed", "shuffle"] = Field(
        "fixed", description="modality visit order: dataset order, or reshuffled every batch"
    )
    hgm: Literal["owm", "off"] = Field("owm", description="head gradient modification")
    alpha: float = Field(1.0, gt=0.0, description="OWM/RLS regulariser: larger = weaker HGM")
    alpha_schedule: Literal["constant", "reference"] = Field(
        "constant",
        description="constant alpha, or the reference code's alpha * 0.1 ** (1 + b / n) at "
        "batch b of n in the epoch (10-100x stronger per update)",
    )
    hgm_order: Literal["project_then_update", "update_then_project"] = Field(
        "project_then_update",
        description="project with P from earlier visits, then add this visit's feature "
        "(OWM), or add it first and project with it (the reference code's order)",
    )
    hgm_bias: Literal["augment", "free"] = Field(
        "augment", description="bias as a weight on an input fixed at 1 (augment), or unmodified"
    )
    reset_projector: bool = Field(False, description="reset P to the identity every epoch")
    fusion: FusionMode = Field("entropy", description="test-time fusion of modality logits")
    temperature: float = Field(1.0, gt=0.0, description="entropy fusion: w = softmax(-e / T)")
    fusion_weights: dict[str, float] | None = Field(
        None, description="fusion 'fixed': one non-negative weight per modality"
    )
    head_lr_mult: float = Field(1.0, gt=0.0, description="lr multiplier of the shared head")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="cross-entropy smoothing")

    @model_validator(mode="after")
    def _fixed_needs_weights(self) -> MLAHparams:
        if self.fusion == "fixed" and not self.fusion_weights:
            raise ValueError("fusion 'fixed' needs fusion_weights: {modality: weight, ...}")
        if self.fusion_weights is not None:
            bad = {
                m: w for m, w in self.fusion_weights.items() if not (w >= 0 and math.isfinite(w))
            }
            if bad:
                raise ValueError(f"fusion_weights must be finite and >= 0, got {bad}")
            if sum(self.fusion_weights.values()) <= 0:
                raise ValueError("fusion_weights must not all be 0")
        return self


# ---------------------------------------------------------------------------- the projector


def owm_update(projector: Tensor, r: Tensor, alpha: float) -> Tensor:
    """One RLS step of the OWM projector with input r: P - (P r)(P r)^T / (alpha + r^T P r).

    Computed in float64 (float32 where the device has none) and re-symmetrised, so P stays a
    symmetric matrix with eigenvalues in (0, 1] over thousands of updates; returns P's dtype.
    """
    dtype = torch.float32 if projector.device.type == "mps" else torch.float64
    p = projector.to(dtype)
    r = r.detach().to(dtype).reshape(-1)
    k = p @ r
    denom = alpha + torch.dot(r, k).clamp_min(0.0)  # r^T P r >= 0 for a PSD P
    p = p - torch.outer(k, k) / denom
    p = 0.5 * (p + p.T)
    return p.to(projector.dtype)


# ---------------------------------------------------------------------------- fusion


def fusion_weights(
    modality_logits: Mapping[str, Tensor],
    present: Mapping[str, Tensor],
    mode: FusionMode = "entropy",
    temperature: float = 1.0,
    fixed: Mapping[str, float] | None = None,
) -> dict[str, Tensor]:
    """Per-sample fusion weights w_m(i) [B] that sum to 1 over the modalities present in i.

    ``entropy``: softmax over present modalities of -H(softmax(z_m(i))) / T. ``mean``: equal.
    ``fixed``: the given weights, renormalised over the present modalities. ``batch_entropy``:
    the reference code's one weight per modality per batch, from the entropy of the softmax
    taken over the *batch* dimension (present rows), renormalised per sample over the present
    modalities. A missing modality always gets weight 0; a sample with none present gets 0s.
    """
    names = list(modality_logits)
    mask = torch.stack([present[m].bool() for m in names], dim=-1)  # [B, M]
    if mode == "entropy":
        ent = torch.stack([_entropy(modality_logits[m].float()) for m in names], dim=-1)
        return _masked_softmax(-ent / temperature, mask, names)
    if mode == "mean":
        return _masked_softmax(torch.zeros(mask.shape, device=mask.device), mask, names)
    if mode == "fixed":
        if fixed is None:
            raise ValueError("fusion 'fixed' needs weights per modality")
        raw = torch.tensor([float(fixed[m]) for m in names], device=mask.device)
        return _renormalise(raw.expand(mask.shape), mask, names)
    if mode == "batch_entropy":
        scores = []
        for m in names:
            rows = present[m].bool()
            z = modality_logits[m].float()[rows]
            if z.shape[0] == 0:
                scores.append(torch.tensor(float("-inf"), device=mask.device))
                continue
            p = F.softmax(z, dim=0)  # over the batch, as the reference code does
            entropy = -(p * F.log_softmax(z, dim=0)).sum()
            scores.append(-entropy / temperature)
        batch_w = torch.softmax(torch.stack(scores), dim=0).nan_to_num(0.0)
        return _renormalise(batch_w.expand(mask.shape), mask, names)
    raise ValueError(f"unknown fusion {mode!r}; expected entropy, mean, fixed or batch_entropy")


def fuse_logits(modality_logits: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> Tensor:
    """sum_m w_m(i) z_m(i); a zero-weight modality is left out, never added as zeros."""
    terms = []
    for m, z in modality_logits.items():
        w = weights[m].to(torch.float32).unsqueeze(-1)
        terms.append(torch.where(w > 0, w * z.float(), torch.zeros_like(z, dtype=torch.float32)))
    return torch.stack(terms).sum(0)


def _entropy(logits: Tensor) -> Tensor:
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _masked_softmax(scores: Tensor, mask: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    return {m: w[:, i] for i, m in enumerate(names)}


def _renormalise(raw: Tensor, mask: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    w = raw * mask.to(raw.dtype)
    total = w.sum(-1, keepdim=True)
    w = torch.where(total > 0, w / total.clamp_min(1e-30), torch.zeros_like(w))
    return {m: w[:, i] for i, m in enumerate(names)}


# ---------------------------------------------------------------------------- the method


@register_method("mla")
class MLA(Method):
    """Alternating unimodal training through one shared head, HGM, entropy-weighted fusion.

    ``model.fusion`` is not used: MLA fuses logits, not features.
    """

    description = "alternating unimodal adaptation with a shared head (Zhang et al., 2024)"
    Hparams = MLAHparams
    hparams: MLAHparams
    tags = MethodTags(
        accumulation=False,
        accumulation_note="MLA takes one optimizer step per modality visit and updates the "
        "projector from each batch's mean feature",
    )
    projector: Tensor

    def __init__(self, task: TaskSpec, model: ModelConfig, hparams: MLAHparams) -> None:
        super().__init__(task, model, hparams)
        if hparams.fusion_weights is not None:
            given, have = set(hparams.fusion_weights), set(task.names)
            if given != have:
                raise ConfigError(
                    f"method 'mla': fusion_weights must name exactly this dataset's modalities "
                    f"{task.names}; unknown {sorted(given - have)}, missing {sorted(have - given)}"
                )
        self.encoders = build_encoders(task, model)
        self.head = create_head(model.head, model.width, task.num_classes, model.head_hidden)
        dim = model.width + (1 if hparams.hgm_bias == "augment" else 0)
        self.register_buffer("projector", torch.eye(dim, dtype=torch.float64))

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> MLA:
        """Keep P's float64 through module casts: Fabric's ``bf16-true``/``16-true`` (or
        ``.half()``) convert every floating buffer, and a rounded P would wreck the recursion.
        P follows a device move; a dtype cast leaves its dtype alone."""
        p = self._buffers.pop("projector")
        try:
            super()._apply(fn, recurse)
        finally:
            probe = fn(torch.zeros((), dtype=p.dtype, device=p.device))
            moved = fn(p) if probe.dtype == p.dtype else p.to(device=probe.device)
            self._buffers["projector"] = moved
        return self

    # ---- structure ------------------------------------------------------------------------
    @property
    def hgm_layer(self) -> nn.Linear:
        """The head layer whose input is the feature: the head itself, or an MLP's first."""
        layer = self.head if isinstance(self.head, nn.Linear) else self.head[0]
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"MLA's head must start with nn.Linear, got {type(layer).__name__}")
        return layer

    def parameter_groups(self) -> list[ParamGroup]:
        return [
            ParamGroup("encoders", list(self.encoders.parameters())),
            ParamGroup("head", list(self.head.parameters()), lr_mult=self.hparams.head_lr_mult),
        ]

    def encode(self, batch: MultimodalBatch, m: str) -> Tensor:
        """[B, width] features of modality m; rows where it is missing are zeros, never encoded."""
        enc = self.encoders[m]
        valid = batch.valid.get(m)
        z = encode_present(enc, batch.inputs[m], batch.present[m], batch.complete[m], valid=valid)
        if not enc.sequence_output:
            return z
        if valid is None:
            return z.mean(1)
        keep = valid.unsqueeze(-1).to(z.dtype)
        return (z * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def forward(
        self, batch: MultimodalBatch, modality: str | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Features and shared-head logits of one modality (a training visit) or of all."""
        names = self.modalities if modality is None else [modality]
        feats = {m: self.encode(batch, m) for m in names}
        return feats, {m: self.head(f) for m, f in feats.items()}

    # ---- training -------------------------------------------------------------------------
    def on_train_epoch_start(self, step: TrainStep, data: EpochData) -> None:
        if self.hparams.reset_projector:
            self.reset_projector()

    def reset_projector(self) -> None:
        with torch.no_grad():
            self.projector.copy_(torch.eye(self.projector.shape[0], dtype=self.projector.dtype))

    def visit_order(self, step: TrainStep) -> list[str]:
        """The modalities in visit order; shuffled from (seed, global step), so every replica
        and a resumed run draw the same order without touching the global RNG."""
        if self.hparams.order == "fixed":
            return list(self.modalities)
        order = torch.randperm(len(self.modalities), generator=step.generator())
        return [self.modalities[i] for i in order]

    def training_step(self, batch: MultimodalBatch, step: TrainStep) -> dict[str, Tensor]:
        logs: dict[str, Tensor] = {}
        losses = []
        for m in self.visit_order(step):
            rows = batch.present[m]
            count = step.count(rows, over=m)  # global: the same on every replica
            if float(count) == 0.0:
                continue
            step.zero_grad()
            feats, logits = step.forward(batch, modality=m)
            # the global mean over present rows: DDP's gradient average equals one process's
            ls = self.hparams.label_smoothing
            loss = cross_entropy(logits[m], batch.labels, step, rows, m, ls)
            step.backward(loss)
            hgm, first = self.hparams.hgm == "owm", self.hparams.hgm_order == "update_then_project"
            if hgm and first:
                self.update_projector(self._mean_feature(feats[m], rows, count, step), step)
            if hgm:
                self.project_head_gradient()
            step.step()
            if hgm and not first:
                self.update_projector(self._mean_feature(feats[m], rows, count, step), step)
            logs[f"loss/{m}"] = loss.detach()
            losses.append(loss.detach())
        logs["loss"] = torch.stack(losses).mean() if losses else torch.zeros(())
        if self.hparams.hgm == "owm":
            logs["hgm/plasticity"] = self.projector.diagonal().mean().detach().float()
        return logs

    @torch.no_grad()
    def project_head_gradient(self) -> None:
        """G <- G P on the head's feature layer (with the bias as a column when augmented)."""
        layer = self.hgm_layer
        if layer.weight.grad is None:
            return
        p = self.projector.to(torch.float64)
        g = layer.weight.grad.to(torch.float64)
        bias = layer.bias
        if self.hparams.hgm_bias == "augment" and bias is not None:
            gb = (
                bias.grad.to(torch.float64)
                if bias.grad is not None
                else torch.zeros(g.shape[0], dtype=torch.float64, device=g.device)
            )
            full = torch.cat([g, gb.unsqueeze(1)], dim=1) @ p
            layer.weight.grad.copy_(full[:, :-1])
            if bias.grad is not None:
                bias.grad.copy_(full[:, -1])
        else:
            d = g.shape[1]
            layer.weight.grad.copy_(g @ p[:d, :d])

    @staticmethod
    def _mean_feature(feats: Tensor, rows: Tensor, count: Tensor, step: TrainStep) -> Tensor:
        """The global mean feature of the visit's present rows (the same on every replica)."""
        f = feats.detach().to(torch.float64)
        local = (f * rows.unsqueeze(-1).to(f.dtype)).sum(0)
        return step.all_reduce_sum(local) / count.to(f.dtype)

    def current_alpha(self, step: TrainStep | None = None) -> float:
        """The RLS regulariser of this update: constant, or the reference code's schedule
        alpha * 0.1 ** (1 + b / n), which falls from alpha/10 to alpha/100 over each epoch."""
        hp = self.hparams
        if hp.alpha_schedule == "constant" or step is None:
            return hp.alpha
        return hp.alpha * 0.1 ** (1.0 + step.batch / max(step.batches, 1))

    @torch.no_grad()
    def update_projector(self, r: Tensor, step: TrainStep | None = None) -> None:
        """RLS update with the just-trained modality's mean feature; a non-finite result
        (which float64 makes practically unreachable) resets P rather than poisoning training."""
        r = r.reshape(-1).to(torch.float64)
        if self.hparams.hgm_bias == "augment":
            r = torch.cat([r, r.new_ones(1)])
        new = owm_update(self.projector, r, self.current_alpha(step))
        if bool(torch.isfinite(new).all()):
            self.projector.copy_(new)
        else:
            self.reset_projector()

    # ---- inference ------------------------------------------------------------------------
    def modality_features(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        return {m: self.encode(batch, m) for m in self.modalities}

    def shared_embeddings(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        """The shared head's input: every modality's features enter the same head."""
        return self.modality_features(batch)

    @property
    def embedding_space(self) -> str:
        return "shared-head input (one head reads every modality)"

    def predict(self, batch: MultimodalBatch) -> Prediction:
        _, logits = self.forward(batch)
        hp = self.hparams
        weights = fusion_weights(
            logits, batch.present, hp.fusion, hp.temperature, hp.fusion_weights
        )
        fused = fuse_logits(logits, weights)
        per_sample = {f"fusion_weight/{m}": w for m, w in weights.items()}
        return Prediction(fused, dict(logits), dict(batch.present), per_sample)

    def extra_repr(self) -> str:
        hp = self.hparams
        return (
            f"hgm={hp.hgm}, alpha={hp.alpha} ({hp.alpha_schedule}), hgm_order={hp.hgm_order}, "
            f"fusion={hp.fusion}, order={hp.order}"
        )
