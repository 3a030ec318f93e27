"""PgM: Partitioner-guided Modal learning (Hu, Xin, Hu, Zhu, Seifi; ACM MM 2025).

Each modality's encoder output h_m is split by a *modal partitioner* into a uni-modal part u_m
and a paired-modal part p_m. A *uni-modal learner* refines u_m with no access to any other
modality and trains its own head; a *paired-modal learner* lets the paired parts attend to each
other across modalities and trains a paired head; a *uni-paired decoder* rebuilds h_m from both
and the task head reads the rebuilt representations. Learning rates can differ per modality and
per part. This module is model-agnostic: :class:`PgMAdapter` wraps any per-modality encoders
(``nn.Module`` giving [B, d] or [B, L, d]); ``unipair.methods.pgm`` uses it on the built-in model.

Design choices where the paper is silent are documented on the fields of :class:`PgMConfig` and
in ``docs/methods/pgm.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from unipair.config_base import StrictModel
from unipair.errors import ConfigError
from unipair.models.multimodal import encode_present, head_slices
from unipair.models.params import ParamGroup

__all__ = [
    "MODALITY_PARTS",
    "SHARED_PARTS",
    "ModalPartitioner",
    "PairedLearner",
    "PgMAdapter",
    "PgMConfig",
    "PgMOutputs",
    "UniLearner",
    "UniPairedDecoder",
    "pool",
    "resolve_lr_mults",
    "resolve_rho",
]

#: parameter-group parts owned by one modality, and parts shared by all
MODALITY_PARTS = ("encoder", "partitioner", "uni", "paired", "decoder")
SHARED_PARTS = ("task", "paired")


class PgMConfig(StrictModel):
    """Every PgM component and loss weight; each ablation is one switch here."""

    partition: Literal["split", "soft", "none"] = Field(
        "split",
        description="split: first rho*d dims uni, rest paired (fixed masks); soft: learned "
        "sigmoid gate per dim; none: no partitioner, u = p = h (ablation)",
    )
    rho: float | dict[str, float] = Field(
        0.5,
        description="uni-modal share per modality (one float, or {modality: float} with '*' "
        "as the default); split: fraction of dims, soft: target of mean(gate)",
    )
    share_from: Literal["config", "heldout"] = Field(
        "config",
        description="where each modality's uni share comes from: rho as configured, or "
        "measured before every epoch on a part held out from train: what its uni head gets "
        "right alone relative to the fused prediction, (acc_uni - chance) / (acc_fused - "
        "chance), clipped to [0.1, 0.9]; rho is the share of the first epoch",
    )
    share_heldout: float = Field(
        0.1, gt=0.0, lt=1.0, description="share_from heldout: fraction of train held out"
    )
    gate_init: Literal["ramp", "constant"] = Field(
        "ramp",
        description="soft: initial gate logits; ramp goes from logit(rho)+2 to logit(rho)-2 "
        "across dims (breaks the symmetry between u and p), constant is logit(rho)",
    )
    gate_conditional: bool = Field(
        False,
        description="soft: add an input-conditioned term W h_m (zero-initialised) to the gate",
    )
    lambda_prior: float = Field(
        1.0, ge=0.0, description="soft: weight of (mean(gate_m) - rho_m)^2 per modality"
    )
    uni_learner: bool = Field(
        True, description="uni-modal learner + uni head + its loss (False: ablation, u~ = u)"
    )
    uni_hidden: int | None = Field(
        None, gt=0, description="uni learner MLP hidden width (None: the modality's width)"
    )
    uni_heads: int = Field(4, gt=0, description="heads of the uni learner's transformer layer")
    paired_learner: bool = Field(
        True,
        description="cross-modal attention + paired head + its loss (False: ablation, p~ = p)",
    )
    cross_attention: Literal["per_pair", "per_target", "shared"] = Field(
        "per_target",
        description="attention of each ordered pair (m <- n) with weights per target modality "
        "m (default), per ordered pair, or one set shared by all pairs",
    )
    heads: int = Field(4, gt=0, description="cross-attention heads")
    paired_tokens: int = Field(
        4,
        ge=1,
        description="a vector's paired part is cut into this many tokens for the cross-modal "
        "attention (1: the whole vector is one token, and the attention reduces to a linear "
        "map of the other modality, which cannot model an interaction)",
    )
    attn_dim: int | None = Field(
        None, gt=0, description="cross-attention width (None: the largest modality width)"
    )
    decoder: bool = Field(
        True, description="uni-paired decoder + reconstruction loss (False: ablation)"
    )
    decoder_hidden: int | None = Field(
        None, gt=0, description="decoder hidden width (None: the modality's width)"
    )
    task_input: Literal["reconstruction", "learners"] = Field(
        "reconstruction",
        description="what the task head reads per modality: the decoder's reconstruction, "
        "or u~ + p~ (forced when decoder is off)",
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout in learners")
    lambda_uni: float = Field(1.0, ge=0.0, description="weight of each uni head's cross-entropy")
    lambda_pair: float = Field(1.0, ge=0.0, description="weight of the paired head's CE")
    lambda_rec: float = Field(1.0, ge=0.0, description="weight of each modality's recon. MSE")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="smoothing of every CE")
    lr_mult: dict[str, float | dict[str, float]] = Field(
        default_factory=dict,
        description="lr multipliers: {modality|'*': float | {part: float}} with parts "
        f"{list(MODALITY_PARTS)}, and {{'shared': {{part: float}}}} with parts "
        f"{list(SHARED_PARTS)}; a modality's entry overrides '*'",
    )
    uniform_lr: bool = Field(
        False, description="ignore lr_mult: one learning rate for all groups (ablation)"
    )

    @field_validator("rho")
    @classmethod
    def _rho_range(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        values = v.values() if isinstance(v, dict) else [v]
        for x in values:
            if not 0.0 <= x <= 1.0:
                raise ValueError(f"rho must lie in [0, 1], got {x}")
        return v

    @field_validator("lr_mult")
    @classmethod
    def _lr_parts(cls, v: dict[str, float | dict[str, float]]) -> dict[str, Any]:
        for key, entry in v.items():
            parts = SHARED_PARTS if key == "shared" else MODALITY_PARTS
            if key == "shared" and not isinstance(entry, dict):
                raise ValueError(f"lr_mult.shared must map parts {list(parts)} to floats")
            items = entry.items() if isinstance(entry, dict) else [("(all parts)", entry)]
            for part, mult in items:
                if isinstance(entry, dict) and part not in parts:
                    raise ValueError(
                        f"lr_mult.{key}: unknown part {part!r}; allowed parts: {list(parts)}"
                    )
                if mult < 0:
                    raise ValueError(f"lr_mult.{key}.{part}: must be >= 0, got {mult}")
        return v


def resolve_rho(rho: float | Mapping[str, float], modalities: Sequence[str]) -> dict[str, float]:
    """rho per modality; a dict may name only known modalities (or '*', the default)."""
    if not isinstance(rho, Mapping):
        return {m: float(rho) for m in modalities}
    unknown = sorted(set(rho) - set(modalities) - {"*"})
    if unknown:
        raise ConfigError(
            f"pgm rho: unknown modality {unknown[0]!r}; this model has {list(modalities)} "
            "(or '*' for the default)"
        )
    default = float(rho.get("*", 0.5))
    return {m: float(rho.get(m, default)) for m in modalities}


def resolve_lr_mults(
    lr_mult: Mapping[str, float | Mapping[str, float]], modalities: Sequence[str]
) -> dict[str, float]:
    """'modality/part' and 'shared/part' -> multiplier, with a clear error on a bad key."""
    unknown = sorted(set(lr_mult) - set(modalities) - {"*", "shared"})
    if unknown:
        raise ConfigError(
            f"pgm lr_mult: unknown key {unknown[0]!r}; expected a modality of this model "
            f"{list(modalities)}, '*' (all modalities) or 'shared'"
        )

    def expand(entry: float | Mapping[str, float] | None, parts: Sequence[str]) -> dict[str, float]:
        if entry is None:
            return {}
        if isinstance(entry, Mapping):
            bad = sorted(set(entry) - set(parts))
            if bad:
                raise ConfigError(f"pgm lr_mult: unknown part {bad[0]!r}; allowed: {list(parts)}")
            return {p: float(x) for p, x in entry.items()}
        return dict.fromkeys(parts, float(entry))

    out: dict[str, float] = {}
    for m in modalities:
        mults = {
            **expand(lr_mult.get("*"), MODALITY_PARTS),
            **expand(lr_mult.get(m), MODALITY_PARTS),
        }
        for part in MODALITY_PARTS:
            out[f"{m}/{part}"] = mults.get(part, 1.0)
    shared = expand(lr_mult.get("shared"), SHARED_PARTS)
    for part in SHARED_PARTS:
        out[f"shared/{part}"] = shared.get(part, 1.0)
    return out


def pool(x: Tensor) -> Tensor:
    """A sequence [B, L, d] -> [B, d] by its mean; a vector passes."""
    return x.mean(1) if x.dim() == 3 else x


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    """A per-sample mask [B] shaped to broadcast over ``like`` ([B, d] or [B, L, d])."""
    return mask.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


# ---- components -----------------------------------------------------------------------------
class ModalPartitioner(nn.Module):
    """h_m -> (u_m, p_m, gate): masks (``split``), a learned gate (``soft``) or identity."""

    def __init__(
        self,
        width: int,
        rho: float,
        mode: str,
        gate_init: str = "ramp",
        conditional: bool = False,
        adaptive: bool = False,
    ) -> None:
        super().__init__()
        self.mode, self.rho, self.width = mode, rho, width
        self.cond: nn.Linear | None = None
        if adaptive:  # the share is measured during training: saved with the weights
            self.register_buffer("share", torch.tensor(float(rho)))
            self.register_buffer("shift", torch.tensor(0.0))
        if mode == "split":
            k = round(rho * width)
            self.register_buffer("mask", (torch.arange(width) < k).float(), persistent=adaptive)
        elif mode == "soft":
            base = torch.full((width,), _logit(rho))
            if gate_init == "ramp":
                base = base + torch.linspace(2.0, -2.0, width)
            self.logits = nn.Parameter(base)
            if conditional:
                self.cond = nn.Linear(width, width)
                nn.init.zeros_(self.cond.weight)
                nn.init.zeros_(self.cond.bias)
        elif mode != "none":
            raise ValueError(f"unknown partition mode {mode!r}")

    def gate(self, h: Tensor) -> Tensor | None:
        """The uni-modal share per dimension, broadcastable to h (None: no partitioner)."""
        if self.mode == "split":
            return self.mask.to(h.dtype)
        if self.mode == "soft":
            z = self.logits if self.cond is None else self.logits + self.cond(h)
            return torch.sigmoid(z + self.shift if hasattr(self, "shift") else z)
        return None

    @property
    def target(self) -> float:
        """The uni share this partitioner is held to: rho, or the last measured share."""
        return float(self.share) if hasattr(self, "share") else self.rho

    @torch.no_grad()
    def set_share(self, share: float) -> None:
        """Move the uni share to ``share`` (``share_from: heldout``): ``split`` masks the first
        round(share * d) dims; ``soft`` shifts every gate logit by logit(share) - logit(rho),
        keeping the learned per-dimension pattern (a prior alone moves gates too slowly)."""
        self.share.fill_(share)
        if self.mode == "split":
            k = round(share * self.width)
            self.mask.copy_((torch.arange(self.width, device=self.mask.device) < k).float())
        elif self.mode == "soft":
            self.shift.fill_(_logit(share) - _logit(self.rho))

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        s = self.gate(h)
        if s is None:
            return h, h, None
        return s * h, (1 - s) * h, s


class UniLearner(nn.Module):
    """Refines u_m alone: a residual MLP for vectors, a transformer layer for sequences."""

    def __init__(
        self, width: int, sequence: bool, hidden: int | None, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.sequence = sequence
        if sequence:
            if width % heads:
                raise ConfigError(f"uni_heads={heads} must divide the modality width {width}")
            self.net: nn.Module = nn.TransformerEncoderLayer(
                width, heads, 2 * width, dropout, batch_first=True, norm_first=True
            )
        else:
            h = hidden or width
            self.net = nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, h),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(h, width),
            )

    def forward(self, u: Tensor) -> Tensor:
        return self.net(u) if self.sequence else u + self.net(u)


class UniPairedDecoder(nn.Module):
    """D_m([u~_m ; p~_m]) -> h_m, position-wise for sequences."""

    def __init__(self, width: int, hidden: int | None) -> None:
        super().__init__()
        h = hidden or width
        self.net = nn.Sequential(nn.Linear(2 * width, h), nn.GELU(), nn.Linear(h, width))

    def forward(self, u: Tensor, p: Tensor) -> Tensor:
        return self.net(torch.cat([u, p], dim=-1))


class _AttnBank(nn.Module):
    """``count`` independent multi-head attention projections, stacked for batched einsum."""

    def __init__(self, count: int, dim: int) -> None:
        super().__init__()
        bound = math.sqrt(6.0 / (2 * dim))  # xavier-uniform per [dim, dim] slice
        for name in ("q", "k", "v", "o"):
            w = nn.Parameter(torch.empty(count, dim, dim).uniform_(-bound, bound))
            self.register_parameter(f"w_{name}", w)
            self.register_parameter(f"b_{name}", nn.Parameter(torch.zeros(count, dim)))


_PROJ = ("q", "k", "v", "o")


class PairedLearner(nn.Module):
    """Cross-modal attention among the paired parts, batched over all ordered pairs (m <- n).

    For target m, p~_m = p_m + out_m(mean over present n != m of Attn(q = p_m, kv = p_n)).
    A vector is a length-1 sequence. A missing source contributes no keys and is left out of
    the mean; a missing target gets no paired feature (zeros). All pairs run in one einsum,
    so 6 modalities (30 pairs) cost one batched matmul per projection.

    With every modality a vector, each query sees one key, the softmax is exactly 1 and the
    output is W_o W_v p_n: the query/key projections are then skipped (they would get zero
    gradient anyway), which is the same function at half the cost.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        widths: Mapping[str, int],
        dim: int,
        heads: int,
        mode: str,
        dropout: float,
        tokens: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"cross-attention heads={heads} must divide attn_dim {dim}")
        self.modalities = list(modalities)
        self.dim, self.heads, self.mode = dim, heads, mode
        mods = self.modalities
        #: tokens per vector (1 for sequences, which attend step by step)
        self.tokens = {m: int((tokens or {}).get(m, 1)) for m in mods}
        tw = {m: widths[m] // self.tokens[m] for m in mods}  # token width
        self.norm = nn.ModuleDict({m: nn.LayerNorm(tw[m]) for m in mods})
        self.proj_in = nn.ModuleDict(
            {m: nn.Identity() if tw[m] == dim else nn.Linear(tw[m], dim) for m in mods}
        )
        self.proj_out = nn.ModuleDict(
            {m: nn.Identity() if tw[m] == dim else nn.Linear(dim, tw[m]) for m in mods}
        )
        # which chunk of the vector a token is: attention can then relate chunk i of one
        # modality to chunk j of another
        self.token_pos = nn.ParameterDict(
            {
                m: nn.Parameter(torch.randn(self.tokens[m], dim) * 0.02)
                for m in mods
                if self.tokens[m] > 1
            }
        )
        pairs = [(i, j) for i in range(len(mods)) for j in range(len(mods)) if i != j]
        self.register_buffer("tgt", torch.tensor([i for i, _ in pairs], dtype=torch.long), False)
        self.register_buffer("src", torch.tensor([j for _, j in pairs], dtype=torch.long), False)
        sources = len(mods) - 1
        self.banks = nn.ModuleDict()
        self.shared_bank: _AttnBank | None = None
        if mode == "shared":
            self.shared_bank = _AttnBank(1, dim)
        elif mode in ("per_pair", "per_target") and sources > 0:
            count = sources if mode == "per_pair" else 1
            self.banks = nn.ModuleDict({m: _AttnBank(count, dim) for m in mods})
        elif mode not in ("per_pair", "per_target"):
            raise ValueError(f"unknown cross_attention mode {mode!r}")
        self.drop = nn.Dropout(dropout)

    def _weights(self, name: str) -> tuple[Tensor, Tensor]:
        """Projection ``name``'s stacked [pairs, D, D] weight and [pairs, D] bias, pair order."""
        n_pairs = self.tgt.numel()
        if self.shared_bank is not None:
            w, b = getattr(self.shared_bank, f"w_{name}"), getattr(self.shared_bank, f"b_{name}")
            return w.expand(n_pairs, -1, -1), b.expand(n_pairs, -1)
        ws = [getattr(self.banks[m], f"w_{name}") for m in self.modalities]
        bs = [getattr(self.banks[m], f"b_{name}") for m in self.modalities]
        if self.mode == "per_target":
            reps = len(self.modalities) - 1
            ws = [w.expand(reps, -1, -1) for w in ws]
            bs = [b.expand(reps, -1) for b in bs]
        return torch.cat(ws), torch.cat(bs)

    def _project(self, x: Tensor, name: str) -> Tensor:
        w, b = self._weights(name)
        return torch.einsum("pbld,pde->pble", x, w) + b[:, None, None]

    def forward(
        self, paired: Mapping[str, Tensor], present: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        mods = self.modalities
        if len(mods) < 2:
            return {m: paired[m] * _rows(present[m], paired[m]) for m in mods}
        seqs = [self._tokens(m, paired[m]) for m in mods]
        lengths = [s.shape[1] for s in seqs]
        lmax = max(lengths)
        b = seqs[0].shape[0]
        x = torch.stack(
            [
                F.pad(self._embed(m, s), (0, 0, 0, lmax - s.shape[1]))
                for m, s in zip(mods, seqs, strict=True)
            ]
        )  # [M, B, L, D]
        pos = torch.arange(lmax, device=x.device)
        valid = torch.stack(
            [(pos[None, :] < n) & present[m][:, None] for m, n in zip(mods, lengths, strict=True)]
        )  # [M, B, L]
        if lmax == 1 and self.mode != "per_pair":
            mean = self._shared_vectors(x[:, :, 0], present)
        else:
            mean = self._attend(x, valid, b, lmax)
        result = {}
        for i, m in enumerate(mods):
            delta = self.proj_out[m](self.drop(mean[i, :, : lengths[i]]))
            if paired[m].dim() == 2 and self.tokens[m] > 1:  # the tokens back into the vector
                delta = delta.reshape(b, 1, -1)
            if paired[m].dim() == 2:
                delta = delta.squeeze(1)
            result[m] = (paired[m] + delta) * _rows(present[m], paired[m])
        return result

    def _tokens(self, m: str, p: Tensor) -> Tensor:
        """A sequence [B, L, d] as it is; a vector [B, d] as [B, T, d / T] tokens."""
        if p.dim() == 3:
            return p
        return p.reshape(p.shape[0], self.tokens[m], -1)

    def _embed(self, m: str, tokens: Tensor) -> Tensor:
        z = self.proj_in[m](self.norm[m](tokens))
        return z + self.token_pos[m] if m in self.token_pos else z

    def _shared_vectors(self, x: Tensor, present: Mapping[str, Tensor]) -> Tensor:
        """Vectors with weights shared over sources: W_o(W_v mean_n p_n + b_v) + b_o, which
        equals the mean of the per-source outputs (the maps are affine), at 1/(M-1) the cost."""
        mods = self.modalities
        on = torch.stack([present[m] for m in mods]).to(x.dtype)  # [M, B]
        xo = x * on[..., None]
        count = on.sum(0, keepdim=True) - on  # present sources other than the target
        src_mean = (xo.sum(0, keepdim=True) - xo) / count.clamp_min(1.0)[..., None]
        if self.shared_bank is not None:
            bank = self.shared_bank
            w_v, b_v, w_o, b_o = bank.w_v[0], bank.b_v[0], bank.w_o[0], bank.b_o[0]
            out = (src_mean @ w_v + b_v) @ w_o + b_o
        else:
            w_v, b_v = torch.cat([self.banks[m].w_v for m in mods]), self._bias("v")
            w_o, b_o = torch.cat([self.banks[m].w_o for m in mods]), self._bias("o")
            v = torch.einsum("mbd,mde->mbe", src_mean, w_v) + b_v[:, None]
            out = torch.einsum("mbd,mde->mbe", v, w_o) + b_o[:, None]
        return (out * (count > 0).to(out.dtype)[..., None]).unsqueeze(2)  # [M, B, 1, D]

    def _bias(self, name: str) -> Tensor:
        return torch.cat([getattr(self.banks[m], f"b_{name}") for m in self.modalities])

    def _attend(self, x: Tensor, valid: Tensor, b: int, lmax: int) -> Tensor:
        """Per-pair attention in one batch; returns the mean over present sources [M, B, L, D]."""
        mods = self.modalities
        xs = x[self.src]  # [P, B, L, D]
        v = self._project(xs, "v")
        n_pairs, h, dh = v.shape[0], self.heads, self.dim // self.heads
        if lmax == 1:  # one key per query: softmax == 1, attention output is v itself
            ctx = v
        else:
            q, k = self._project(x[self.tgt], "q"), self._project(xs, "k")

            def split(t: Tensor) -> Tensor:  # [P, B, L, D] -> [P, B, H, L, dh]
                return t.view(n_pairs, b, lmax, h, dh).transpose(2, 3)

            scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(dh)
            key_ok = valid[self.src][:, :, None, None, :]  # [P, B, 1, 1, L]
            scores = scores.float().masked_fill(~key_ok, float("-inf"))
            attn = torch.softmax(scores, dim=-1).nan_to_num(0.0).to(v.dtype)  # no key -> 0
            ctx = (attn @ split(v)).transpose(2, 3).reshape(n_pairs, b, lmax, self.dim)
        out = self._project(ctx, "o")
        src_on = valid[:, :, 0].to(out.dtype)[self.src]  # [P, B]: source present
        out = out * src_on[:, :, None, None]
        summed = out.new_zeros(len(mods), b, lmax, self.dim).index_add(0, self.tgt, out)
        count = src_on.new_zeros(len(mods), b).index_add(0, self.tgt, src_on)
        return summed / count.clamp_min(1.0)[:, :, None, None]


#: reduces per-sample values over masked rows: (values [B], rows [B] bool, name of the rows)
RowMean = Callable[[Tensor, Tensor, str], Tensor]


def _masked_mean(values: Tensor, rows: Tensor, over: str) -> Tensor:
    w = rows.to(values.dtype)
    return (values * w).sum() / w.sum().clamp_min(1.0)


class _ParamHolder(nn.Module):
    """Lets a lone parameter sit in a list of modules (for parameter groups)."""

    def __init__(self, param: nn.Parameter) -> None:
        super().__init__()
        self.param = param


# ---- outputs and the adapter ----------------------------------------------------------------
@dataclass
class PgMOutputs:
    """Everything one PgM forward pass produces; ``losses`` reads it, visualisations too.

    ``features`` h_m, ``uni``/``paired`` the partitioned u_m/p_m, ``uni_out``/``paired_out``
    the learners' u~_m/p~_m, ``recon`` the decoder's rebuilt h_m (empty without a decoder),
    ``gates`` the uni share per dim (split: the mask; empty with no partitioner).
    """

    logits: Tensor
    uni_logits: dict[str, Tensor]
    paired_logits: Tensor | None
    features: dict[str, Tensor]
    uni: dict[str, Tensor]
    paired: dict[str, Tensor]
    uni_out: dict[str, Tensor]
    paired_out: dict[str, Tensor]
    recon: dict[str, Tensor]
    gates: dict[str, Tensor]
    present: dict[str, Tensor]
    task_features: dict[str, Tensor] = field(default_factory=dict)


class _ConcatHead(nn.Module):
    """Default fusion for user models: concat of (masked, pooled) features, then a linear
    layer to ``classes`` (None: the concatenation itself, for a user-given head)."""

    def __init__(
        self, modalities: Sequence[str], widths: Mapping[str, int], classes: int | None
    ) -> None:
        super().__init__()
        self.modalities = list(modalities)
        dim = sum(widths[m] for m in self.modalities)
        self.linear: nn.Module = nn.Identity() if classes is None else nn.Linear(dim, classes)

    def forward(self, features: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        parts = [features[m] * _rows(present[m], features[m]) for m in self.modalities]
        return self.linear(torch.cat(parts, dim=-1))


class PgMAdapter(nn.Module):
    """Inserts PgM between a model's per-modality encoders and its task head.

    ``encoders[m]`` is any module mapping modality m's input to [B, d_m] or [B, L, d_m] (d_m =
    ``widths[m]``). ``fusion(features, present) -> [B, F]`` and ``head`` ([B, F] -> logits) are the
    model's own task head (unipair's ``Fusion`` contract); without them a concat + linear head
    is built. ``forward(inputs, present)`` gives :class:`PgMOutputs`, ``losses(outputs, labels)``
    the PgM loss terms with their weighted sum under ``"loss"``, ``optimizer_groups(lr)`` the
    per-(modality, part) groups for any ``torch.optim`` optimizer.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        widths: Mapping[str, int],
        num_classes: int,
        config: PgMConfig | Mapping[str, Any] | None = None,
        *,
        fusion: nn.Module | None = None,
        head: nn.Module | None = None,
        sequence: Mapping[str, bool] | None = None,
    ) -> None:
        super().__init__()
        cfg = config if isinstance(config, PgMConfig) else PgMConfig.model_validate(config or {})
        self.config = cfg
        self.modalities = list(encoders)
        mods = self.modalities
        missing = sorted(set(mods) - set(widths))
        if missing:
            raise ValueError(f"PgMAdapter: no width given for modalities {missing}")
        self.widths = {m: int(widths[m]) for m in mods}
        seq = dict(sequence or {})
        self.sequence = {
            m: bool(seq.get(m, getattr(encoders[m], "sequence_output", False))) for m in mods
        }
        self.num_classes = num_classes
        self.rho = resolve_rho(cfg.rho, mods)
        self.lr_mults = resolve_lr_mults(cfg.lr_mult, mods)  # validates keys now, not at step 1

        self.encoders = nn.ModuleDict(dict(encoders))
        self.partitioners = nn.ModuleDict(
            {
                m: ModalPartitioner(
                    self.widths[m],
                    self.rho[m],
                    cfg.partition,
                    cfg.gate_init,
                    cfg.gate_conditional,
                    adaptive=cfg.share_from == "heldout",
                )
                for m in mods
            }
        )
        self.uni_learners = nn.ModuleDict()
        self.uni_heads = nn.ModuleDict()
        if cfg.uni_learner:
            for m in mods:
                self.uni_learners[m] = UniLearner(
                    self.widths[m], self.sequence[m], cfg.uni_hidden, cfg.uni_heads, cfg.dropout
                )
                self.uni_heads[m] = nn.Linear(self.widths[m], num_classes)
        self.paired_learner: PairedLearner | None = None
        self.paired_head: nn.Linear | None = None
        if cfg.paired_learner:
            dim = cfg.attn_dim or max(self.widths.values())
            tokens = {
                m: cfg.paired_tokens
                if not self.sequence[m] and self.widths[m] % cfg.paired_tokens == 0
                else 1
                for m in mods
            }
            self.paired_learner = PairedLearner(
                mods, self.widths, dim, cfg.heads, cfg.cross_attention, cfg.dropout, tokens
            )
            self.paired_head = nn.Linear(sum(self.widths.values()), num_classes)
        self.decoders = nn.ModuleDict(
            {m: UniPairedDecoder(self.widths[m], cfg.decoder_hidden) for m in mods}
            if cfg.decoder
            else {}
        )
        if fusion is None:  # concat + linear, or concat into the user's head
            fusion = _ConcatHead(mods, self.widths, num_classes if head is None else None)
        self.fusion: nn.Module = fusion
        self.head: nn.Module = head if head is not None else nn.Identity()

    # ---- forward ------------------------------------------------------------------------
    def encode(
        self,
        inputs: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        valid: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Encoder outputs h_m; ``valid`` marks the real steps of padded sequences (for
        encoders that pool them; PgM's learners read no padding mask, so a per-step output of
        a padded modality is refused)."""
        out = {}
        valid = valid or {}
        for m in self.modalities:
            if m in valid and self.sequence[m]:
                raise ConfigError(
                    f"PgMAdapter: modality {m!r} is padded to a batch length and its encoder "
                    "returns steps; PgM's learners take no padding mask, so pool it (e.g. the "
                    "transformer encoder's pool: mean)"
                )
            h = encode_present(
                self.encoders[m],
                inputs[m],
                present[m],
                width=self.widths[m],
                sequence=self.sequence[m],
                valid=valid.get(m),
            )
            if h.shape[-1] != self.widths[m]:
                raise ValueError(
                    f"PgMAdapter: encoder {m!r} gives width {h.shape[-1]}, widths says "
                    f"{self.widths[m]}"
                )
            out[m] = h
        return out

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        present: Mapping[str, Tensor] | None = None,
        valid: Mapping[str, Tensor] | None = None,
    ) -> PgMOutputs:
        """Encoders -> partitioner -> uni / paired learners -> decoder -> task head."""
        if present is None:
            n = next(iter(inputs.values())).shape[0]
            dev = next(iter(inputs.values())).device
            present = {m: torch.ones(n, dtype=torch.bool, device=dev) for m in self.modalities}
        present = dict(present)
        h = self.encode(inputs, present, valid)
        return self.from_features(h, present)

    def from_features(
        self,
        h: Mapping[str, Tensor],
        present: Mapping[str, Tensor],
        drop: Sequence[str] = (),
    ) -> PgMOutputs:
        """The PgM part alone, from encoder outputs h_m (missing rows are ignored).

        ``drop`` zeroes learned parts before the decoder and the task head, to measure what
        each carries: ``"uni/<m>"``, ``"paired/<m>"``, or ``"uni"``/``"paired"`` for all.
        """
        cfg, mods = self.config, self.modalities
        u, p, gates = {}, {}, {}
        for m in mods:
            u[m], p[m], s = self.partitioners[m](h[m])
            if s is not None:
                gates[m] = s
        if cfg.uni_learner:
            u_t = {m: self.uni_learners[m](u[m]) for m in mods}
            uni_logits = {m: self.uni_heads[m](pool(u_t[m])) for m in mods}
        else:
            u_t, uni_logits = dict(u), {}
        if self.paired_learner is not None and self.paired_head is not None:
            p_t = self.paired_learner(p, present)
            paired_logits: Tensor | None = self.paired_head(
                torch.cat([pool(p_t[m]) for m in mods], dim=-1)
            )
        else:
            p_t, paired_logits = dict(p), None
        for part, out in (("uni", u_t), ("paired", p_t)):
            for m in mods:
                if part in drop or f"{part}/{m}" in drop:
                    out[m] = torch.zeros_like(out[m])
        recon = {m: self.decoders[m](u_t[m], p_t[m]) for m in mods} if cfg.decoder else {}
        if cfg.decoder and cfg.task_input == "reconstruction":
            task_features = {m: pool(recon[m]) for m in mods}
        else:
            task_features = {m: pool(u_t[m] + p_t[m]) for m in mods}
        logits = self.head(self.fusion(task_features, present))
        return PgMOutputs(
            logits=logits,
            uni_logits=uni_logits,
            paired_logits=paired_logits,
            features=dict(h),
            uni=u,
            paired=p,
            uni_out=u_t,
            paired_out=p_t,
            recon=recon,
            gates=gates,
            present=dict(present),
            task_features=task_features,
        )

    # ---- losses -------------------------------------------------------------------------
    def losses(
        self, outputs: PgMOutputs, labels: Tensor, mean: RowMean | None = None
    ) -> dict[str, Tensor]:
        """L = task + l_uni * sum_m uni_m + l_pair * paired + l_rec * sum_m rec_m (+ prior).

        Per-modality terms average over the rows where that modality is present; the
        reconstruction target h_m is detached, so it never moves toward its reconstruction.
        ``mean(values, rows, over)`` reduces per-sample values over the rows selected by the
        bool mask ``rows`` (None: every row), named ``over`` (a modality, or '*' for rows with
        any modality); the default is the batch mean, the ``pgm`` method passes the engine's
        step-normalised mean (``TrainStep.mean``).
        """
        cfg, pres = self.config, outputs.present
        mean = mean or _masked_mean
        any_present = torch.stack([pres[m] for m in self.modalities]).any(0)

        def ce(logits: Tensor, rows: Tensor, over: str) -> Tensor:
            per = F.cross_entropy(
                logits.float(), labels, reduction="none", label_smoothing=cfg.label_smoothing
            )
            return mean(per, rows, over)

        out: dict[str, Tensor] = {"task": ce(outputs.logits, any_present, "*")}
        total = out["task"]
        for m, z in outputs.uni_logits.items():
            out[f"uni/{m}"] = ce(z, pres[m], m)
            total = total + cfg.lambda_uni * out[f"uni/{m}"]
        if outputs.paired_logits is not None:
            out["paired"] = ce(outputs.paired_logits, any_present, "*")
            total = total + cfg.lambda_pair * out["paired"]
        for m, r in outputs.recon.items():
            target = outputs.features[m].detach()
            err = (r.float() - target.float()).pow(2).flatten(1).mean(1)
            out[f"rec/{m}"] = mean(err, pres[m], m)
            total = total + cfg.lambda_rec * out[f"rec/{m}"]
        if cfg.partition == "soft" and cfg.lambda_prior > 0:
            for m, s in outputs.gates.items():
                if s.dim() > 1:  # conditional gate: this batch's mean over present rows
                    share = _masked_mean(pool(s).mean(-1).float(), pres[m], m)
                else:
                    share = s.float().mean()
                out[f"prior/{m}"] = (share - self.partitioners[m].target) ** 2
                total = total + cfg.lambda_prior * out[f"prior/{m}"]
        out["loss"] = total
        return out

    # ---- diagnostics --------------------------------------------------------------------
    def uni_share(self, outputs: PgMOutputs) -> dict[str, Tensor]:
        """Per-sample uni-modal share of each modality (mean gate); empty with no partitioner."""
        out = {}
        for m, s in outputs.gates.items():
            b = outputs.features[m].shape[0]
            share = pool(s).mean(-1) if s.dim() > 1 else s.mean().expand(b)
            out[m] = share.reshape(b) if share.numel() == b else share.expand(b)
        return out

    def task_slices(self, outputs: PgMOutputs) -> dict[str, Tensor]:
        """Each modality's share of the task head (OGM-GE's diagnostic), as in MultimodalModel."""
        return head_slices(
            self.fusion, self.head, outputs.task_features, outputs.present, self.modalities
        )

    # ---- optimisation -------------------------------------------------------------------
    def parameter_groups(self) -> list[ParamGroup]:
        """Groups 'modality/part' and 'shared/part'; each parameter in exactly one; empty ones
        are left out. ``uniform_lr`` sets every multiplier to 1."""
        mults = self.lr_mults
        groups: list[ParamGroup] = []

        def add(name: str, modules: Sequence[nn.Module | None]) -> None:
            # frozen parameters too: a frozen encoder part has no gradient, and the optimizer
            # skips it until it trains (``freeze: until_epoch:N``)
            params = [p for mod in modules if mod is not None for p in mod.parameters()]
            if params:
                mult = 1.0 if self.config.uniform_lr else mults[name]
                groups.append(ParamGroup(name, params, mult))

        pl = self.paired_learner
        for m in self.modalities:
            add(f"{m}/encoder", [self.encoders[m]])
            add(f"{m}/partitioner", [self.partitioners[m]])
            add(
                f"{m}/uni",
                [self.uni_learners[m], self.uni_heads[m]] if m in self.uni_learners else [],
            )
            paired_mods: list[nn.Module | None] = []
            if pl is not None:
                paired_mods = [pl.norm[m], pl.proj_in[m], pl.proj_out[m]]
                if m in pl.token_pos:
                    paired_mods.append(_ParamHolder(pl.token_pos[m]))
                if m in pl.banks:
                    paired_mods.append(pl.banks[m])
            add(f"{m}/paired", paired_mods)
            add(f"{m}/decoder", [self.decoders[m]] if m in self.decoders else [])
        add("shared/task", [self.fusion, self.head])
        add("shared/paired", [self.paired_head, pl.shared_bank if pl is not None else None])
        seen = {id(p) for g in groups for p in g.params}
        rest = [n for n, p in self.named_parameters() if id(p) not in seen]
        if rest:  # a user's encoder sharing modules across modalities, say
            raise ValueError(f"PgMAdapter: parameters in no group: {rest[:5]}")
        return groups

    def optimizer_groups(self, lr: float, **defaults: Any) -> list[dict[str, Any]]:
        """``torch.optim`` parameter groups: lr = base lr * multiplier, named like 'audio/uni'."""
        return [
            {"params": g.params, "lr": lr * g.lr_mult, "name": g.name, **defaults}
            for g in self.parameter_groups()
        ]
