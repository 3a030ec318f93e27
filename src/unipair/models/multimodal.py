"""The standard multimodal model: one encoder per modality, a fusion, a classification head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from unipair.config_base import StrictModel
from unipair.data.batch import MultimodalBatch
from unipair.data.dataset import TaskSpec
from unipair.errors import ConfigError
from unipair.models.encoders import create_encoder
from unipair.models.fusion import FUSIONS, ConcatFusion, create_fusion
from unipair.models.heads import HEADS, create_head
from unipair.models.sync_batchnorm import has_sync_batchnorm

__all__ = [
    "EncoderConfig",
    "ModelConfig",
    "MultimodalModel",
    "build_encoders",
    "encode_present",
]


class EncoderConfig(StrictModel):
    """``name`` from the encoder registry (None: chosen from the input shape) and its options."""

    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(StrictModel):
    """Architecture shared by all methods; ``encoders`` is keyed by modality ('*' = all others)."""

    width: int = Field(128, gt=0, description="common feature width of every encoder")
    encoders: dict[str, EncoderConfig] = Field(default_factory=dict)
    fusion: str = "concat"
    fusion_options: dict[str, Any] = Field(default_factory=dict)
    head: str = "linear"
    head_hidden: int = Field(256, gt=0)

    @field_validator("fusion")
    @classmethod
    def _known_fusion(cls, v: str) -> str:
        if v not in FUSIONS:
            raise ValueError(FUSIONS.unknown_message(v))
        return v

    @field_validator("head")
    @classmethod
    def _known_head(cls, v: str) -> str:
        if v not in HEADS:
            raise ValueError(HEADS.unknown_message(v))
        return v


#: fusions whose head reads every modality's features with the same weights
SHARED_SPACE_FUSIONS = ("sum", "gated")


def fusion_input_space(fusion: str) -> str:
    """The fusion input as an embedding space, in words, for the modality gap: under
    ``sum``/``gated`` one head reads every modality, under ``concat``/``film`` each modality
    has its own weights, so a gap there is expected."""
    shared = fusion in SHARED_SPACE_FUSIONS
    how = "one head reads every modality" if shared else "each modality has its own weights"
    return f"{fusion} fusion's input ({how})"


def build_encoders(
    task: TaskSpec, config: ModelConfig, modalities: Sequence[str] | None = None
) -> nn.ModuleDict:
    names = list(modalities) if modalities is not None else task.names
    unknown = sorted(set(config.encoders) - set(task.names) - {"*"})
    if unknown:
        raise ConfigError(
            f"model.encoders names unknown modalities {unknown}; this dataset has {task.names}"
        )
    fallback = config.encoders.get("*", EncoderConfig())
    encoders = {}
    for m in names:
        enc, spec = config.encoders.get(m, fallback), task[m]
        try:
            encoders[m] = create_encoder(
                enc.name, spec.shape, config.width, vocab=spec.vocab, **enc.options
            )
        except ConfigError as e:
            raise ConfigError(f"modality {m!r} (shape {list(spec.shape)}): {e}") from None
        if spec.variable_length and not getattr(encoders[m], "reads_steps", False):
            raise ConfigError(
                f"modality {m!r} has variable length (up to {spec.shape[0]} steps): its encoder "
                f"{type(encoders[m]).__name__} cannot read padded sequences; use 'transformer' "
                "(or 'tokens' for token ids)"
            )
    return nn.ModuleDict(encoders)


def encode_present(
    encoder: nn.Module,
    x: Tensor,
    present: Tensor,
    complete: bool | None = None,
    width: int | None = None,
    sequence: bool | None = None,
    valid: Tensor | None = None,
) -> Tensor:
    """Encode only the rows where the modality is present; missing rows get zero features.

    Missing inputs are never run through the encoder, so they cannot leak into batch
    statistics (BatchNorm) or be mistaken for data. Works for any module; ``complete`` (no row
    missing) saves a check when known. ``width``/``sequence`` describe the output for a batch
    with no present row (default: the encoder's ``out_dim``/``sequence_output``). ``valid``
    (bool [B, L]) marks the real steps of a padded sequence for encoders that read them.
    """

    def run(rows: Tensor | None) -> Tensor:
        inputs = x if rows is None else x[rows]
        if valid is None:
            return encoder(inputs)
        return encoder(inputs, valid if rows is None else valid[rows])

    if complete if complete is not None else bool(present.all()):
        return run(None)
    rows = torch.nonzero(present).squeeze(1)
    if rows.numel() == 0 and has_sync_batchnorm(encoder):
        run(rows)  # take part in the other processes' BatchNorm all-reduces
    if rows.numel() == 0:  # nothing reads these rows: a length-1 sequence is enough
        width = width if width is not None else encoder.out_dim
        seq = sequence if sequence is not None else getattr(encoder, "sequence_output", False)
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        shape = (x.shape[0], 1, width) if seq else (x.shape[0], width)
        return torch.zeros(shape, dtype=dtype, device=x.device)
    encoded = run(rows)
    return encoded.new_zeros((x.shape[0], *encoded.shape[1:])).index_put((rows,), encoded)


def head_slices(
    fusion: nn.Module,
    head: nn.Module,
    features: Mapping[str, Tensor],
    present: Mapping[str, Tensor | None],
    modalities: Sequence[str],
) -> dict[str, Tensor]:
    """Each modality's share of a fused head: its diagnostic prediction.

    For concat fusion with a linear head this is the head's slice, W_m h_m + b / M, as
    OGM-GE reports it (the slices sum to the fused logits). For other fusions it is the
    fused head applied with only modality m present.
    """
    if isinstance(fusion, ConcatFusion) and isinstance(head, nn.Linear):
        w = head.weight.split(fusion.width, dim=1)
        share = head.bias / len(modalities)
        return {m: features[m] @ w[i].t() + share for i, m in enumerate(modalities)}
    out = {}
    for m in modalities:
        ref = features[m]
        alone = {
            n: (
                torch.ones(ref.shape[0], dtype=torch.bool, device=ref.device)
                if present[n] is None
                else present[n]
            )
            if n == m
            else torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device)
            for n in modalities
        }
        out[m] = head(fusion(features, alone))
    return out


class MultimodalModel(nn.Module):
    """Encoders -> fusion -> head. ``forward`` returns per-modality features and fused logits."""

    def __init__(
        self, task: TaskSpec, config: ModelConfig, modalities: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.modalities = list(modalities) if modalities is not None else task.names
        self.encoders = build_encoders(task, config, self.modalities)
        self.fusion = create_fusion(
            config.fusion, self.modalities, config.width, **config.fusion_options
        )
        self.head = create_head(
            config.head, self.fusion.out_dim, task.num_classes, config.head_hidden
        )

    def encode(self, batch: MultimodalBatch) -> dict[str, Tensor]:
        return {
            m: encode_present(
                self.encoders[m],
                batch.inputs[m],
                batch.present[m],
                batch.complete[m],
                valid=batch.valid.get(m),
            )
            for m in self.modalities
        }

    def classify(self, features: dict[str, Tensor], present: Mapping[str, Tensor | None]) -> Tensor:
        return self.head(self.fusion(features, present))

    def forward(self, batch: MultimodalBatch) -> tuple[dict[str, Tensor], Tensor]:
        features = self.encode(batch)
        return features, self.classify(features, batch.masks())

    def modality_logits(
        self, features: dict[str, Tensor], present: Mapping[str, Tensor | None]
    ) -> dict[str, Tensor]:
        """Each modality's diagnostic prediction: see :func:`head_slices`."""
        return head_slices(self.fusion, self.head, features, present, self.modalities)
