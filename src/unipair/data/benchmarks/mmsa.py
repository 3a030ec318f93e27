"""CMU-MOSI and CMU-MOSEI from MMSA's feature pickles, as classification tasks.

MMSA (thuiar/MMSA) ships ``<root>/Processed/aligned_50.pkl`` and ``unaligned_50.pkl``: a dict
with ``train``, ``valid`` and ``test``, each holding ``text`` (BERT features [N, L, 768]),
``text_bert`` ([N, 3, L]: token ids, attention mask, segment ids), ``audio`` and ``vision``
(zero-padded [N, T, D]), ``audio_lengths`` / ``vision_lengths`` (unaligned data),
``regression_labels`` (sentiment in [-3, 3]), ``id`` and ``raw_text``. The splits are MMSA's,
as given. unipair trains classifiers, so ``target`` turns the sentiment into classes the way
MMSA's metrics do (``has0``, ``non0``, ``3class``, ``7class``; see :data:`TARGETS`).

Padded sequences carry ``valid`` masks: audio and vision from their lengths, text from the
attention mask. Aligned pickles have no informative lengths (absent, or every one equal to the
padded length): their audio and vision are then fixed [T, D] sequences read in full, zero
steps included, as MMSA's aligned models read them. ``audio == -inf`` becomes 0, as MMSA's
loader does; any other non-finite value is an error. MMSA does not standardise these features,
so neither does this loader unless ``standardize=True``.

Loading holds the pickle while it copies the kept rows into one float32 array per modality;
each of the pickle's arrays is released once copied, so the peak stays near the pickle's size
plus its largest array.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unipair.data.assemble import assemble
from unipair.data.dataset import MultimodalData, TaskSpec, TensorMultimodalDataset
from unipair.data.standardize import Standardizer
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["TARGETS", "VARIANTS", "load_mmsa", "load_mosei", "load_mosi"]

#: MMSA's split names in its pickles -> unipair's
SPLITS = (("train", "train"), ("valid", "val"), ("test", "test"))
VARIANTS = ("aligned", "unaligned")
TEXT_MODES = ("features", "tokens")
TITLES = {"mosi": "CMU-MOSI", "mosei": "CMU-MOSEI"}
#: the largest token id float32 holds exactly (the in-memory arrays are float32)
MAX_TOKEN_ID = 2**24


def _has0(y: np.ndarray) -> np.ndarray:
    return (y >= 0).astype(np.int64)


def _non0(y: np.ndarray) -> np.ndarray:
    return (y > 0).astype(np.int64)


def _three(y: np.ndarray) -> np.ndarray:
    return (np.sign(y) + 1).astype(np.int64)


def _seven(y: np.ndarray) -> np.ndarray:
    # np.round rounds halves to even (0.5 -> 0, 1.5 -> 2), as MMSA's Mult_acc_7 does
    return (np.round(np.clip(y, -3.0, 3.0)) + 3).astype(np.int64)


#: target -> (class names in index order, label rule, rule as text)
TARGETS: dict[str, tuple[tuple[str, ...], Callable[[np.ndarray], np.ndarray], str]] = {
    "has0": (("negative", "non-negative"), _has0, "label >= 0 vs < 0 (MMSA Has0_acc_2)"),
    "non0": (
        ("negative", "positive"),
        _non0,
        "label > 0 vs < 0, samples with label == 0 dropped from every split (MMSA Non0_acc_2)",
    ),
    "3class": (
        ("negative", "neutral", "positive"),
        _three,
        "label < 0, == 0, > 0",
    ),
    "7class": (
        ("-3", "-2", "-1", "0", "1", "2", "3"),
        _seven,
        "round(clip(label, -3, 3)) + 3, halves to even as np.round (MMSA Mult_acc_7)",
    ),
}


def _open(path: Path) -> dict[str, dict[str, Any]]:
    """The pickle's three splits; a truncated or foreign file is one error naming it."""
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} does not exist; expected MMSA's Processed/aligned_50.pkl or "
            "unaligned_50.pkl under the dataset root"
        )
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as e:  # unpickling a damaged or foreign file can raise almost anything
        raise DataFormatError(
            f"{path}: not a readable MMSA pickle (truncated, or another format): "
            f"{type(e).__name__}: {e}"
        ) from None
    if not isinstance(data, dict) or any(not isinstance(data.get(s), dict) for s, _ in SPLITS):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataFormatError(
            f"{path}: not an MMSA pickle: expected a dict of 'train', 'valid' and 'test' "
            f"dicts, found {found}"
        )
    return data


def _get(path: Path, split: str, part: Mapping[str, Any], key: str, n: int | None) -> np.ndarray:
    """``part[key]`` as an array of ``n`` rows, or an error naming the file, split and key."""
    if key not in part:
        raise DataFormatError(
            f"{path}: split {split!r} has no {key!r} key; it has {sorted(map(str, part))}"
        )
    try:
        x = np.asarray(part[key])
    except ValueError as e:  # e.g. a list of arrays of different shapes
        raise DataFormatError(f"{path}: {split}/{key} is not one array: {e}") from None
    if n is not None and (x.ndim == 0 or x.shape[0] != n):
        raise DataFormatError(
            f"{path}: {split}/{key} has shape {list(x.shape)}; expected {n} rows, as "
            "regression_labels"
        )
    return x


def _stack(
    path: Path,
    parts: Mapping[str, dict[str, Any]],
    key: str,
    keep: Mapping[str, np.ndarray],
    row: int | None = None,
) -> np.ndarray:
    """One float32 array of the kept samples of every split (train, valid, test in order);
    ``row`` picks one row of ``text_bert`` ([N, 3, L] -> [N, L])."""
    total = sum(int(k.sum()) for k in keep.values())
    out: np.ndarray | None = None
    start = 0
    for split, _ in SPLITS:
        rows = keep[split]
        x = _get(path, split, parts[split], key, len(rows))
        if row is not None:
            if x.ndim != 3 or x.shape[1] != 3:
                raise DataFormatError(
                    f"{path}: {split}/{key} has shape {list(x.shape)}; expected [N, 3, L] "
                    "(token ids, attention mask, segment ids)"
                )
            x = x[:, row]
        elif x.ndim != 3:
            raise DataFormatError(
                f"{path}: {split}/{key} has shape {list(x.shape)}; expected [N, T, D]"
            )
        if out is None:
            out = np.empty((total, *x.shape[1:]), dtype=np.float32)
        elif x.shape[1:] != out.shape[1:]:
            raise DataFormatError(
                f"{path}: {split}/{key} has samples of shape {list(x.shape[1:])}, train "
                f"{list(out.shape[1:])}"
            )
        stop = start + int(rows.sum())
        out[start:stop] = x if bool(rows.all()) else x[rows]
        start = stop
    assert out is not None  # SPLITS is not empty
    return out


def _drop(parts: Mapping[str, dict[str, Any]], key: str) -> None:
    """Free a key's arrays once copied: the peak stays one float32 copy above the pickle."""
    for part in parts.values():
        part.pop(key, None)


def _lengths(
    path: Path,
    parts: Mapping[str, dict[str, Any]],
    key: str,
    keep: Mapping[str, np.ndarray],
    variant: str,
) -> np.ndarray | None:
    """The kept samples' lengths; None where aligned data have none (unaligned must)."""
    if variant == "aligned" and any(key not in parts[s] for s, _ in SPLITS):
        return None
    return np.concatenate(
        [
            _get(path, s, parts[s], key, len(keep[s])).reshape(-1).astype(np.int64)[keep[s]]
            for s, _ in SPLITS
        ]
    )


def _mask(lengths: np.ndarray, steps: int) -> tuple[np.ndarray, int]:
    """bool [N, steps] from lengths clipped to [1, steps] (an encoder needs one real step);
    and how many lengths were clipped."""
    clipped = np.clip(lengths, 1, steps)
    return np.arange(steps)[None, :] < clipped[:, None], int(np.sum(clipped != lengths))


def _finite(path: Path, key: str, x: np.ndarray, zero_neg_inf: bool, chunk: int = 1024) -> None:
    """``-inf`` -> 0 when asked (MMSA's loader does it for audio), in place and in chunks;
    any other NaN or inf is an error."""
    bad = 0
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk]
        if zero_neg_inf:
            part[np.isneginf(part)] = 0.0
        bad += int(np.count_nonzero(~np.isfinite(part)))
    if bad:
        raise DataFormatError(f"{path}: {key} holds {bad} NaN or infinite value(s)")


def _standardize_(
    inputs: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray], n_train: int
) -> None:
    """Per-feature standardisation fitted on the training rows' real steps (the first
    ``n_train`` rows), in place; padded steps stay zero."""
    tensors = {m: torch.from_numpy(x) for m, x in inputs.items()}
    masks = {m: torch.from_numpy(v) for m, v in valid.items() if m in inputs}
    n = len(next(iter(inputs.values())))
    train = TensorMultimodalDataset(
        {m: t[:n_train] for m, t in tensors.items()},
        torch.zeros(n_train, dtype=torch.long),
        valid={m: v[:n_train] for m, v in masks.items()},
    )
    everything = TensorMultimodalDataset(tensors, torch.zeros(n, dtype=torch.long), valid=masks)
    Standardizer.fit(train).transform_(everything)


def load_mmsa(
    path: str | Path,
    name: str,
    variant: str = "aligned",
    target: str = "has0",
    text: str = "features",
    vocab_size: int | None = None,
    standardize: bool = False,
    seed: int = 0,
) -> MultimodalData:
    """The MMSA pickle at ``path`` as the dataset ``name``; options as :func:`load_mosi`."""
    if variant not in VARIANTS:
        raise ConfigError(f"{name}: variant must be one of {list(VARIANTS)}, got {variant!r}")
    if target not in TARGETS:
        raise ConfigError(f"{name}: target must be one of {list(TARGETS)}, got {target!r}")
    if text not in TEXT_MODES:
        raise ConfigError(f"{name}: text must be one of {list(TEXT_MODES)}, got {text!r}")
    path = Path(path)
    classes, rule, rule_text = TARGETS[target]
    parts = _open(path)
    sentiment = {
        s: _get(path, s, parts[s], "regression_labels", None).astype(np.float64).reshape(-1)
        for s, _ in SPLITS
    }
    for s, values in sentiment.items():
        if not np.all(np.isfinite(values)):
            raise DataFormatError(f"{path}: {s}/regression_labels holds NaN or inf")
    keep = {s: v != 0 if target == "non0" else np.ones(len(v), bool) for s, v in sentiment.items()}
    labels = np.concatenate([rule(sentiment[s][keep[s]]) for s, _ in SPLITS])
    sizes = {u: int(keep[s].sum()) for s, u in SPLITS}
    bounds = np.cumsum([0, *sizes.values()])
    split = {u: np.arange(bounds[i], bounds[i + 1]) for i, (_, u) in enumerate(SPLITS)}

    # text: BERT features or token ids, its real tokens from the attention mask
    attention = _stack(path, parts, "text_bert", keep, row=1) > 0.5
    if text == "features":
        inputs = {"text": _stack(path, parts, "text", keep)}
    else:
        inputs = {"text": _stack(path, parts, "text_bert", keep, row=0)}
    _drop(parts, "text")
    _drop(parts, "text_bert")
    if inputs["text"].shape[1] != attention.shape[1]:
        raise DataFormatError(
            f"{path}: text has {inputs['text'].shape[1]} steps but text_bert "
            f"{attention.shape[1]}; they must match"
        )
    empty = ~attention.any(axis=1)
    attention[empty, 0] = True  # a text without a real token keeps one step
    valid = {"text": attention}
    masks = {"text": "text_bert attention mask"}
    clipped = {"text": int(empty.sum())}
    for m in ("audio", "vision"):
        inputs[m] = _stack(path, parts, m, keep)
        _drop(parts, m)
        steps = inputs[m].shape[1]
        lengths = _lengths(path, parts, f"{m}_lengths", keep, variant)
        if lengths is None or bool(np.all(lengths == steps)):
            masks[m] = f"none: all {steps} steps read (no informative {m}_lengths)"
            continue
        valid[m], clipped[m] = _mask(lengths, steps)
        masks[m] = f"{m}_lengths, clipped to [1, {steps}]"
    for m, x in inputs.items():
        _finite(path, m, x, zero_neg_inf=m == "audio")
    vocab = None
    if text == "tokens":
        ids = inputs["text"]
        if ids.min() < 0 or ids.max() >= MAX_TOKEN_ID or np.any(ids != np.round(ids)):
            raise DataFormatError(f"{path}: text_bert token ids are not integers in [0, 2^24)")
        vocab = int(ids.max()) + 1 if vocab_size is None else int(vocab_size)
        if vocab <= ids.max():
            raise ConfigError(
                f"{name}: vocab_size={vocab_size}, but {path} holds token id {int(ids.max())}"
            )
    if standardize:
        features = {m: x for m, x in inputs.items() if m != "text" or text == "features"}
        _standardize_(features, valid, sizes["train"])
    info: dict[str, Any] = {
        "benchmark": TITLES.get(name, name),
        "file": str(path),
        "variant": variant,
        "split_rule": "MMSA's train / valid (validation) / test, as given",
        "target": target,
        "target_rule": rule_text,
        "classes": list(classes),
        "preprocessing": {
            "text": "BERT features" if text == "features" else f"BERT token ids, vocab {vocab}",
            "audio": "MMSA's features, -inf set to 0 (as MMSA)",
            "vision": "MMSA's features",
            "masks": masks,
            "standardize": "per feature, fitted on the training rows' real steps"
            if standardize
            else "none (as MMSA)",
        },
    }
    if target == "non0":
        info["dropped_label_0"] = {u: int((~keep[s]).sum()) for s, u in SPLITS}
    if any(clipped.values()):
        info["lengths_clipped"] = clipped
    stat = path.stat()
    data = assemble(
        name,
        inputs,
        labels,
        seed=seed,
        split=split,
        standardize=False,
        num_classes=len(classes),
        source=f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{variant}|{target}|{text}|{vocab}|"
        f"{standardize}",
        info=info,
        valid=valid,
    )
    if vocab is not None:  # assemble does not know token ids: give the spec the vocabulary
        modalities = tuple(
            dataclasses.replace(s, vocab=vocab) if s.name == "text" else s
            for s in data.spec.modalities
        )
        data.spec = TaskSpec(modalities, data.spec.num_classes)
    return data


def _pickle(root: str | Path | None, title: str, variant: str) -> Path:
    """``root/Processed/<variant>_50.pkl``, or ``root`` itself when it is a file."""
    if root is None:
        raise DataNotFoundError(
            f"{title} is not shipped with unipair: give root= the folder holding MMSA's "
            f"Processed/{variant}_50.pkl (or the .pkl file itself)"
        )
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataNotFoundError(f"{title} root {root} does not exist")
    return root / "Processed" / f"{variant}_50.pkl"


def load_mosi(
    root: str | Path | None = None,
    variant: str = "aligned",
    target: str = "has0",
    text: str = "features",
    vocab_size: int | None = None,
    standardize: bool = False,
    seed: int = 0,
) -> MultimodalData:
    """CMU-MOSI from MMSA's ``root/Processed/{variant}_50.pkl`` (``root`` may be the file).

    ``variant``: aligned or unaligned; ``target``: has0, non0, 3class or 7class (:data:`TARGETS`);
    ``text``: ``features`` (BERT [L, 768]) or ``tokens`` (ids; the vocabulary is ``vocab_size``
    or, by default, the largest id + 1: pass 30522 for bert-base-uncased); ``standardize``: per
    feature on the training split (MMSA does not). The splits are MMSA's; ``seed`` is recorded.
    """
    return load_mmsa(
        _pickle(root, TITLES["mosi"], variant),
        "mosi",
        variant,
        target,
        text,
        vocab_size,
        standardize,
        seed,
    )


def load_mosei(
    root: str | Path | None = None,
    variant: str = "aligned",
    target: str = "has0",
    text: str = "features",
    vocab_size: int | None = None,
    standardize: bool = False,
    seed: int = 0,
) -> MultimodalData:
    """CMU-MOSEI from MMSA's ``root/Processed/{variant}_50.pkl``; options as :func:`load_mosi`."""
    return load_mmsa(
        _pickle(root, TITLES["mosei"], variant),
        "mosei",
        variant,
        target,
        text,
        vocab_size,
        standardize,
        seed,
    )
