"""``hf:<dir>``: a Hugging Face text model from a local directory, never downloaded.

The directory is what ``save_pretrained`` writes (``config.json`` and ``model.safetensors`` or
``pytorch_model.bin``, possibly sharded). It is read by
``AutoModel.from_pretrained(dir, local_files_only=True, trust_remote_code=False)`` with the hub
switched offline for the call (the guard of :mod:`unipair.data.media.text`), so a model that
exists only on the hub is an error here, and code in the directory never runs. Encoder-only
models (BERT, RoBERTa, DistilBERT, ELECTRA, DeBERTa) fit: the encoder reads token ids [L] and
the batch's validity mask, and pools ``cls`` (the first token: tokenise with special tokens) or
``mean`` (over the real tokens).

Loading is as strict as for image weights: weights the model has but the files lack
(``missing``, randomly initialised by transformers) or the files have inside the model's own
modules (``unexpected``) fail the load unless ``strict: false``. A checkpoint's task heads
(``cls.*``, ``classifier.*``: outside the base model) and BERT's pooler, which no pooling here
reads (removed as ``add_pooling_layer=False`` would), are listed as ``dropped``.
A tensor of the wrong shape always fails (transformers refuses it). ``weights_info`` hashes
``config.json`` and every weights file (see :func:`hf_weights_info`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from unipair.errors import ConfigError, DataFormatError, DataNotFoundError
from unipair.models.encoders import ENCODERS, Encoder
from unipair.models.pretrained import FreezeSpec, file_digest, hold_frozen

__all__ = ["HFTextEncoder", "hf_weights_info", "load_hf_model"]

#: what of a model directory is hashed: its configuration and weights, not its tokenizer
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")


def hf_weights_info(path: Path) -> dict[str, Any]:
    """``path``, ``size`` (bytes) and ``sha256`` of a model directory: each of ``config.json``
    and the weights files is hashed (``files``: name -> sha256 and size), and ``sha256`` is the
    hash of the lines ``<name> <sha256> <size>`` in name order."""
    names = sorted(
        f.name
        for f in path.iterdir()
        if f.is_file() and (f.name == "config.json" or f.name.endswith(_WEIGHT_SUFFIXES))
    )
    if not any(n != "config.json" for n in names):
        raise DataFormatError(
            f"hf:{path}: no weights file (model.safetensors, pytorch_model.bin or shards); "
            "expected a directory written by save_pretrained"
        )
    files = {}
    for name in names:
        sha256, size = file_digest(path / name)
        files[name] = {"sha256": sha256, "size": size}
    lines = "".join(f"{n} {f['sha256']} {f['size']}\n" for n, f in files.items())
    return {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(lines.encode()).hexdigest(),
        "size": sum(f["size"] for f in files.values()),
        "files": files,
    }


def load_hf_model(path: str | Path, strict: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a local directory (float32, train mode, no pooler) and its weights_info."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(
            f"hf:{path}: no such directory (expected a folder written by save_pretrained)"
        )
    if not (path / "config.json").is_file():
        raise DataFormatError(f"hf:{path}: no config.json (expected a save_pretrained folder)")
    info = hf_weights_info(path)
    try:
        from transformers import AutoModel
    except ImportError as e:
        raise ImportError(
            "hf:<dir> encoders need `transformers`: pip install 'unipair[text]'"
        ) from e
    from unipair.data.media.text import _hub_offline

    with _hub_offline():
        try:
            model, loading = AutoModel.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False, output_loading_info=True
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
            raise DataFormatError(f"cannot load Hugging Face model directory {path}: {e}") from e
    own = {name for name, _ in model.named_children()}
    unexpected = sorted(k for k in loading["unexpected_keys"] if k.split(".")[0] in own)
    dropped = [k for k in loading["unexpected_keys"] if k.split(".")[0] not in own]
    missing = sorted(loading["missing_keys"])
    if isinstance(getattr(model, "pooler", None), nn.Module):
        pooler = [f"pooler.{k}" for k in model.pooler.state_dict()]
        dropped += [k for k in pooler if k not in missing]
        missing = [k for k in missing if k not in pooler]
        model.pooler = None
    if strict and (missing or unexpected):
        parts = [f"missing keys: {missing}"] if missing else []
        parts += [f"unexpected keys: {unexpected}"] if unexpected else []
        raise DataFormatError(
            f"hf:{path}: the weights do not match {type(model).__name__}: {'; '.join(parts)}. "
            "Set strict: false to keep what matched (the rest stays randomly initialised); "
            "the keys are listed in the encoder's weights_info"
        )
    info.update(missing=missing, unexpected=unexpected, dropped=sorted(dropped))
    return model.float().train(), info


@ENCODERS.register_family("hf")
class HFTextEncoder(Encoder):
    """Token ids [L] through a local Hugging Face model; ``pool``: ``cls`` | ``mean``.

    ``freeze`` (:class:`~unipair.models.pretrained.FreezeSpec`): ``all`` is the whole model,
    ``stem`` its embeddings (token, position and type embeddings and their LayerNorm for
    BERT-like models). ``example_vocab`` is for the conformance kit: a model to check must have
    at least that many tokens.
    """

    example_input_shape = (12,)
    example_vocab = 50
    reads_steps = True

    def __init__(
        self,
        path: str,
        input_shape: Sequence[int],
        width: int,
        pool: str = "cls",
        strict: bool = True,
        freeze: str | None = None,
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ConfigError(f"hf:{path} needs [L] token ids, got shape {list(input_shape)}")
        if pool not in ("cls", "mean"):
            raise ConfigError(f"hf:{path}: pool must be 'cls' or 'mean', got {pool!r}")
        self.freeze = FreezeSpec.parse(freeze)
        self.frozen: tuple[str, ...] = ()
        self.model, self.weights_info = load_hf_model(path, strict)
        hidden = int(self.model.config.hidden_size)
        self.proj: nn.Module = nn.Identity() if width == hidden else nn.Linear(hidden, width)
        self.pool = pool
        self.out_dim = width

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.proj(x if self.reads_features else self.frozen_features(x, valid))

    def frozen_features(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """The model's pooled hidden state [B, hidden] (``pool``), before projection."""
        mask = None if valid is None else valid.long()
        h = self.model(input_ids=x.long(), attention_mask=mask).last_hidden_state
        if self.pool == "cls":
            z = h[:, 0]
        elif valid is None:
            z = h.mean(1)
        else:
            keep = valid.unsqueeze(-1).to(h.dtype)
            z = (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return z

    def freeze_scopes(self) -> dict[str, tuple[str, ...]]:
        embeddings = getattr(self.model, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            embeddings = self.model.get_input_embeddings()
        stem = next(f"model.{n}" for n, m in self.model.named_modules() if m is embeddings)
        return {"all": ("model",), "stem": (stem,)}

    def train(self, mode: bool = True) -> HFTextEncoder:
        super().train(mode)
        hold_frozen(self)
        return self
