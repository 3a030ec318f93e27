"""Turn in-memory arrays into a split, standardised :class:`MultimodalData`.

Every tensor-backed dataset (handwritten, npz, avdigits, small synthetic) ends here, so the
protocol is the same for all of them: stratified seeded splits unless the source fixes them,
statistics fitted on ``train`` only, and a fingerprint of exactly what was built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from unipair.data.dataset import (
    SPLITS,
    ModalitySpec,
    MultimodalData,
    TaskSpec,
    TensorMultimodalDataset,
    fingerprint,
)
from unipair.data.splits import stratified_holdout, stratified_split
from unipair.data.standardize import Standardizer
from unipair.errors import DataFormatError

__all__ = ["assemble"]


def assemble(
    name: str,
    inputs: Mapping[str, np.ndarray | torch.Tensor],
    labels: np.ndarray,
    *,
    seed: int = 0,
    split: Mapping[str, np.ndarray] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    standardize: bool = True,
    num_classes: int | None = None,
    source: str = "",
    info: Mapping[str, Any] | None = None,
    valid: Mapping[str, np.ndarray] | None = None,
) -> MultimodalData:
    """Build the three splits. ``valid`` (bool [N, L] per padded sequence modality) marks real
    steps: statistics use those only, and the modality is variable-length in the task spec.

    ``split`` may give all three index arrays, or only ``train`` and ``test`` (then ``val`` is
    carved from ``train``, stratified), or be None (all three are drawn, stratified by seed).
    """
    labels = np.asarray(labels).astype(np.int64)
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    if split is None:
        idx = stratified_split(labels, val_fraction, test_fraction, seed)
        how = f"stratified (val {val_fraction}, test {test_fraction}, seed {seed})"
    elif "val" not in split:
        train, val = stratified_holdout(
            labels, np.asarray(split["train"]), val_fraction, seed, "val"
        )
        idx = {"train": train, "val": val, "test": np.asarray(split["test"])}
        how = f"given test; val {val_fraction} of the rest, stratified (seed {seed})"
    else:
        idx = {s: np.asarray(split[s]) for s in SPLITS}
        how = "given"
    _check_disjoint(idx)
    missing = [k for k in range(c) if not np.any(labels[idx["train"]] == k)]
    if missing:
        raise DataFormatError(f"{name}: class(es) {missing} have no training sample")

    parts = _contiguous_splits(inputs, labels, idx, valid or {})
    if standardize:
        scaler = Standardizer.fit(parts["train"])
        for d in parts.values():
            scaler.transform_(d)
    shapes = {m: tuple(x.shape[1:]) for m, x in parts["train"].inputs.items()}
    spec = TaskSpec(
        tuple(ModalitySpec(m, shape, variable_length=m in (valid or {})) for m, shape in
              shapes.items()),
        c,
    )  # fmt: skip
    fp = fingerprint(name, source, standardize, *(idx[s] for s in SPLITS))
    return MultimodalData(
        name=name,
        spec=spec,
        seed=seed,
        fingerprint=fp,
        info={"split": how, "standardize": standardize, **(info or {})},
        **parts,
    )


def _contiguous_splits(
    inputs: Mapping[str, np.ndarray | torch.Tensor],
    labels: np.ndarray,
    idx: Mapping[str, np.ndarray],
    valid: Mapping[str, np.ndarray],
) -> dict[str, TensorMultimodalDataset]:
    """The three splits as views of one float32 array per modality, without a copy of the
    data: the rows are reordered in place (train, val, test, then any unused rows), so each
    split is a contiguous slice. The arrays are taken over (float32 arrays are reordered in
    place; any other dtype is converted once)."""
    n = len(labels)
    used = np.concatenate([idx[s] for s in SPLITS])
    order = np.concatenate([used, np.setdiff1d(np.arange(n), used)])
    tensors = {}
    for m, x in inputs.items():
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.dtype != np.float32 or not x.flags.writeable or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
            if not x.flags.writeable:
                x = x.copy()
        permute_rows_(x, order)
        tensors[m] = torch.from_numpy(x)
    ordered_labels = torch.as_tensor(labels[order])
    masks = {m: torch.as_tensor(np.asarray(v, dtype=bool)[order]) for m, v in valid.items()}
    parts, start = {}, 0
    for s in SPLITS:
        rows = slice(start, start + len(idx[s]))
        start = rows.stop
        parts[s] = TensorMultimodalDataset(
            {m: x[rows] for m, x in tensors.items()},
            ordered_labels[rows],
            index=torch.as_tensor(order[rows]),
            valid={m: v[rows] for m, v in masks.items()},
        )
    return parts


def permute_rows_(x: np.ndarray, order: np.ndarray) -> None:
    """Reorder rows in place so that row i becomes old row ``order[i]`` (a permutation),
    following its cycles with one row of scratch memory."""
    n = len(order)
    done = order == np.arange(n)
    for start in np.flatnonzero(~done).tolist():
        if done[start]:
            continue
        scratch = x[start].copy()
        j = start
        while True:
            k = int(order[j])
            done[j] = True
            if k == start:
                x[j] = scratch
                break
            x[j] = x[k]
            j = k


def _check_disjoint(idx: Mapping[str, np.ndarray]) -> None:
    for a in SPLITS:
        for b in SPLITS:
            if a < b and np.intersect1d(idx[a], idx[b]).size:
                raise ValueError(f"splits {a!r} and {b!r} share samples")
