"""Text to token ids with a local tokenizer, never downloaded.

``load_tokenizer`` reads a ``tokenizer.json`` file (the ``tokenizers`` package) or a Hugging Face
tokenizer directory (``transformers``, local files only, the hub offline for the call); both are
optional extras imported inside the function. ``Tokenize`` turns one string into int64 ids and
a validity mask with the same result for either kind of tokenizer. Ids are *not* padded to
``max_length``: the batch pads (``unipair.data.media.arrays.pad_sequences``), so short texts cost
no compute and the mask marks real tokens (True), the inverse of MLA's saved padding mask
(1 = pad). MLA's recipe is ``Tokenize(bert, max_length=256, special_tokens=False)``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

__all__ = ["TOKENIZER_FILES", "Tokenize", "load_tokenizer"]

# Files of which a Hugging Face tokenizer directory holds at least one.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_INSTALL = "pip install 'unipair[text]'"
# init_kwargs that name where the files were, not what they hold: kept out of fingerprints.
_LOCATION_KWARGS = frozenset({"name_or_path", "is_local", "local_files_only", "cache_dir"})


def load_tokenizer(path: str | Path) -> Tokenizer | PreTrainedTokenizerBase:
    """A tokenizer from local files: ``tokenizer.json`` or a Hugging Face tokenizer directory.

    A file is read by ``tokenizers.Tokenizer.from_file``; a directory by
    ``transformers.AutoTokenizer.from_pretrained(dir, local_files_only=True)`` with the hub
    switched offline during the call, so nothing is ever fetched (a tokenizer that exists only
    on the hub is an error here, not a download). Remote code in the directory is never run.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"tokenizer {path} does not exist")
    if path.is_dir():
        return _load_hf_directory(path)
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ImportError(f"reading tokenizer file {path} needs `tokenizers`: {_INSTALL}") from e
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for any malformed file
        raise DataFormatError(
            f"cannot read tokenizer file {path} (expected a tokenizer.json written by "
            f"`tokenizers` or `save_pretrained`): {e}"
        ) from e


def _load_hf_directory(path: Path) -> PreTrainedTokenizerBase:
    """``AutoTokenizer`` on a local directory, offline, with errors naming the directory."""
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise DataFormatError(
            f"tokenizer directory {path} holds no tokenizer file; expected one of "
            f"{list(TOKENIZER_FILES)} (a directory written by `save_pretrained`)"
        )
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ImportError(
            f"reading tokenizer directory {path} needs `transformers`: {_INSTALL}"
        ) from e
    with _hub_offline():
        try:
            return AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataFormatError(f"cannot load tokenizer directory {path}: {e}") from e


@contextmanager
def _hub_offline() -> Iterator[None]:
    """The Hugging Face hub offline for the block: any hub request fails instead of going out.

    ``HF_HUB_OFFLINE=1`` in the environment only counts when ``huggingface_hub`` is first
    imported (transformers imports it), so the switch it sets, which the hub checks before every
    request, is set here and restored afterwards. Other threads see it meanwhile.
    """
    import huggingface_hub.constants as hub

    saved = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved


class Tokenize:
    """One text to (ids int64 [L], mask bool [L]), at most ``max_length`` tokens, unpadded.

    ``special_tokens`` adds what the tokenizer's post-processor adds (BERT: [CLS] ... [SEP]);
    truncation keeps room for them, as Hugging Face does. ``special_tokens=False`` is MLA's
    ``add_special_tokens=False``. Without ``truncation`` a longer text is an error rather than a
    sequence the batch cannot hold. A text that yields no token at all (empty, blank, or only
    characters the tokenizer drops) is an error, since an encoder cannot summarise zero tokens;
    with special tokens the same text is valid and yields just them (BERT: [CLS] [SEP]).
    """

    def __init__(
        self,
        tokenizer: Tokenizer | PreTrainedTokenizerBase,
        max_length: int,
        special_tokens: bool,
        truncation: bool = True,
    ) -> None:
        self.max_length = int(max_length)
        self.special_tokens = bool(special_tokens)
        self.truncation = bool(truncation)
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ImportError(f"tokenising needs `tokenizers`: {_INSTALL}") from e
        self._hf = not isinstance(tokenizer, Tokenizer)
        if self._hf:
            self._tokenizer = tokenizer
            n_special = tokenizer.num_special_tokens_to_add(pair=False)
            self._digest = _hf_digest(tokenizer)
        else:
            # A private copy: truncation is set once on it, never on the caller's tokenizer.
            direction = (tokenizer.truncation or {}).get("direction", "right")
            self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
            self._tokenizer.no_truncation()
            self._tokenizer.no_padding()
            self._digest = _sha256(self._tokenizer.to_str(), direction)
            n_special = self._tokenizer.num_special_tokens_to_add(False)
            if self.truncation:
                self._tokenizer.enable_truncation(self.max_length, direction=direction)
        n_special = n_special if self.special_tokens else 0
        if self.max_length <= n_special:
            raise ConfigError(
                f"max_length={self.max_length} leaves no room for text next to the "
                f"{n_special} special tokens; need max_length > {n_special}"
            )

    def params(self) -> dict[str, object]:
        """Every parameter that changes the output: what a cache key must include."""
        return {
            "tokenizer_sha256": self._digest,
            "max_length": self.max_length,
            "special_tokens": self.special_tokens,
            "truncation": self.truncation,
        }

    def __call__(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(text, str):
            raise DataFormatError(f"expected a text string, got {type(text).__name__}: {text!r}")
        if self._hf:
            ids = self._tokenizer(
                text,
                add_special_tokens=self.special_tokens,
                truncation=self.truncation,
                max_length=self.max_length if self.truncation else None,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        else:
            ids = self._tokenizer.encode(text, add_special_tokens=self.special_tokens).ids
        if not ids:
            raise DataFormatError(f"text {_shorten(text)} decodes to no tokens")
        if len(ids) > self.max_length:
            raise DataFormatError(
                f"text {_shorten(text)} has {len(ids)} tokens, more than max_length="
                f"{self.max_length}; set truncation=True to cut it"
            )
        return np.asarray(ids, dtype=np.int64), np.ones(len(ids), dtype=bool)


def _hf_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of what a transformers tokenizer encodes with: vocabulary, rules and settings.

    A fast tokenizer's rules all live in its ``tokenizers`` backend, hashed without the
    truncation and padding state that every call resets (and that ``save_pretrained`` then
    writes); a Python tokenizer's in its vocabulary and ``init_kwargs``, less where the files
    were.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        rules = json.loads(backend.to_str())
        rules.pop("truncation", None)
        rules.pop("padding", None)
    else:
        settings = {
            k: v
            for k, v in tokenizer.init_kwargs.items()
            if k not in _LOCATION_KWARGS and not k.endswith("_file")
        }
        rules = {"vocab": sorted(tokenizer.get_vocab().items()), "settings": settings}
    return _sha256(
        type(tokenizer).__qualname__,
        json.dumps(rules, sort_keys=True, default=repr),
        repr((tokenizer.truncation_side, getattr(tokenizer, "split_special_tokens", False))),
    )


def _sha256(*parts: str) -> str:
    """A short stable hash (16 hex digits of SHA-256), as the datasets' fingerprints are."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _shorten(text: str, limit: int = 60) -> str:
    """The text for an error message: its repr, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
