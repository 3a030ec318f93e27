"""Datasets described by a manifest: media on disk, decoded batch by batch.

A manifest is a CSV (or JSON Lines) file with one row per sample: ``label``, optionally
``split`` (train/val/test), ``group`` (e.g. the speaker, for group-disjoint splits) and ``id``,
and one column per modality holding a path relative to the manifest (or, for text, the text).
An empty cell means the modality is missing for that sample (``present`` is False); a file
that is missing or unreadable is an error naming the row, never a silent zero tensor.

Only the rows of a batch are decoded (in DataLoader workers when ``train.num_workers`` > 0), so
memory is proportional to a batch, whatever the dataset's size. A prepared cache
(:mod:`unipair.data.prepared`) replaces decoding by reading memory-mapped arrays.
"""

from __future__ import annotations

import csv
import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from unipair.data.batch import Affine, MultimodalBatch, batch_tensors
from unipair.data.dataset import (
    SPLITS,
    ModalitySpec,
    MultimodalData,
    MultimodalDataset,
    TaskSpec,
    epoch_of,
    fingerprint,
)
from unipair.data.readers import Reader, create_reader, infer_kind, media_file
from unipair.data.splits import stratified_holdout, stratified_split
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError, UnipairError

__all__ = [
    "DecodedRows",
    "ManifestDataset",
    "ManifestTable",
    "check_manifest",
    "is_manifest_path",
    "load_manifest",
    "manifest_data",
    "read_manifest",
]

RESERVED = ("label", "split", "group", "id")
OnError = Literal["raise", "skip"]


def is_manifest_path(name: str) -> bool:
    """A path to a manifest (``.csv``, ``.jsonl``) or to a prepared cache folder."""
    path = Path(name)
    return path.suffix.lower() in (".csv", ".jsonl") or (path / "prepared.json").is_file()


@dataclass
class ManifestTable:
    """The manifest's rows as read: column -> values (None for an empty cell)."""

    path: Path
    columns: dict[str, list[str | None]]
    #: the line of each row in the file, for messages (CSV: header is line 1)
    lines: list[int]

    def __len__(self) -> int:
        return len(self.lines)

    def where(self, row: int) -> str:
        return f"{self.path} line {self.lines[row]}"


def read_manifest(path: str | Path) -> ManifestTable:
    """Read a CSV (header row) or JSON Lines manifest; every row must have every column."""
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"{path} is a directory; expected a manifest .csv or .jsonl file")
    if not path.is_file():
        raise DataNotFoundError(f"manifest {path} does not exist")
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataFormatError(f"{path} line {line_no}: not valid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise DataFormatError(f"{path} line {line_no}: expected a JSON object")
                rows.append(row)
                lines.append(line_no)
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise DataFormatError(
                        f"{path} line {reader.line_num}: the row has a different number of "
                        f"cells than the header {reader.fieldnames}"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    if not rows:
        raise DataFormatError(f"manifest {path} has no rows")
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    columns: dict[str, list[str | None]] = {k: [] for k in names}
    for row in rows:
        for k in names:
            v = row.get(k)
            columns[k].append(None if v is None or str(v).strip() == "" else str(v))
    return ManifestTable(path, columns, lines)


def _labels(
    table: ManifestTable, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """Class indices, and the class names when labels are not already 0..C-1; with
    ``classes`` given, their order is the class index and any other label is an error."""
    values = table.columns.get("label")
    if values is None:
        raise DataFormatError(f"{table.path}: no 'label' column; columns are {list(table.columns)}")
    empty = [table.lines[i] for i, v in enumerate(values) if v is None]
    if empty:
        raise DataFormatError(f"{table.path}: empty label on line(s) {empty[:10]}")
    texts = [str(v).strip() for v in values]
    if classes is not None:
        lookup = {str(c): i for i, c in enumerate(classes)}
        unknown = [(table.lines[i], t) for i, t in enumerate(texts) if t not in lookup]
        if unknown:
            values = sorted({t for _, t in unknown})
            raise DataFormatError(
                f"{table.path}: unknown label value(s) {values[:5]} on line(s) "
                f"{[ln for ln, _ in unknown[:5]]}; the classes are {list(classes)}"
            )
        return np.array([lookup[t] for t in texts], dtype=np.int64), [str(c) for c in classes]
    if all(t.lstrip("-").isdigit() for t in texts):
        ints = np.array([int(t) for t in texts], dtype=np.int64)
        if ints.min() >= 0 and set(np.unique(ints).tolist()) == set(range(int(ints.max()) + 1)):
            return ints, None
    classes = sorted(set(texts))
    if len(classes) < 2:
        raise DataFormatError(f"{table.path}: the label column has one class only ({classes})")
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[t] for t in texts], dtype=np.int64), classes


def _check_ids(table: ManifestTable) -> None:
    ids = table.columns.get("id")
    if ids is None:
        return
    seen: dict[str, int] = {}
    for i, v in enumerate(ids):
        if v is None:
            raise DataFormatError(f"{table.where(i)}: empty id")
        if v in seen:
            raise DataFormatError(
                f"{table.where(i)}: id {v!r} repeats the one on line {table.lines[seen[v]]}"
            )
        seen[v] = i


def _readers(
    table: ManifestTable, modalities: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Reader]:
    """A reader per modality: the configured ones (every other column is an error), or one
    per non-reserved column with its kind guessed from the first value's extension."""
    root = table.path.parent
    columns = [c for c in table.columns if c not in RESERVED]
    if modalities:
        unknown = [c for c in columns if c not in modalities]
        if unknown:
            raise ConfigError(
                f"{table.path}: column(s) {unknown} name no configured modality; configured: "
                f"{sorted(modalities)} (remove the columns, or configure them under "
                "dataset.options.modalities)"
            )
        absent = [m for m in modalities if m not in table.columns]
        if absent:
            raise ConfigError(
                f"{table.path}: configured modalities {absent} have no column; columns: "
                f"{list(table.columns)}"
            )
        names = list(modalities)
    else:
        names = columns
    if len(names) < 2:
        raise DataFormatError(f"{table.path}: need at least two modality columns, found {names}")
    readers = {}
    for m in names:
        if "." in m or "/" in m:
            raise DataFormatError(
                f"{table.path}: column {m!r}: modality names cannot contain '.' or '/'; rename it"
            )
        options = dict((modalities or {}).get(m, {}))
        kind = options.pop("kind", None)
        if kind is None:
            first = next((v for v in table.columns[m] if v is not None), None)
            if first is None:
                raise DataFormatError(f"{table.path}: column {m!r} is empty in every row")
            kind = infer_kind(first, root)
        try:
            readers[m] = create_reader(kind, **options)
        except UnipairError as e:
            raise type(e)(f"modality {m!r}: {e}") from None
    return readers


def _problems(table: ManifestTable, readers: Mapping[str, Reader]) -> list[tuple[int, str, str]]:
    """Cheap checks before any decoding: every referenced file exists and is not empty, and
    every row has at least one modality. (``datasets check`` decodes every file.)"""
    root = table.path.parent
    found = []
    for i in range(len(table)):
        cells = {m: table.columns[m][i] for m in readers}
        if all(v is None for v in cells.values()):
            found.append((i, "*", "no modality in this row"))
        for m, v in cells.items():
            if v is None or not readers[m].reads_files:
                continue
            path = root / media_file(v)  # a time segment (clip.mp4#t=2,5) names its file
            if not path.exists():
                found.append((i, m, f"{path} does not exist"))
            elif path.is_file() and path.stat().st_size == 0:
                found.append((i, m, f"{path} is empty"))
    return found


def format_problems(table: ManifestTable, problems: Sequence[tuple[int, str, str]]) -> str:
    shown = [f"line {table.lines[i]}, column {m!r}: {why}" for i, m, why in problems[:10]]
    more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
    return "; ".join(shown) + more


def _splits(
    table: ManifestTable,
    labels: np.ndarray,
    keep: np.ndarray,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> tuple[dict[str, np.ndarray], str]:
    """Row indices per split: given (``split`` column, val carved from train if absent),
    group-disjoint (``group`` column), or stratified by class."""
    split = table.columns.get("split")
    groups = table.columns.get("group")
    if split is not None:
        bad = sorted({v for v in split if v not in SPLITS})
        if bad:
            raise DataFormatError(
                f"{table.path}: split column has value(s) {bad}; allowed: {list(SPLITS)}"
            )
        parts = {s: keep[np.array([split[i] == s for i in keep], dtype=bool)] for s in SPLITS}
        if len(parts["train"]) == 0 or len(parts["test"]) == 0:
            raise DataFormatError(f"{table.path}: the split column needs train and test rows")
        if len(parts["val"]):
            return parts, "given"
        train, val = stratified_holdout(labels, parts["train"], val_fraction, seed, "val")
        return {**parts, "train": train, "val": val}, f"given test; val {val_fraction} of train"
    if groups is not None:
        return _group_splits(table, labels, keep, seed, val_fraction, test_fraction)
    idx = stratified_split(labels[keep], val_fraction, test_fraction, seed)
    return {s: keep[idx[s]] for s in SPLITS}, f"stratified (seed {seed})"


def _group_splits(
    table: ManifestTable,
    labels: np.ndarray,
    keep: np.ndarray,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> tuple[dict[str, np.ndarray], str]:
    from sklearn.model_selection import GroupShuffleSplit

    groups = np.array([table.columns["group"][i] or "" for i in keep])
    if len(set(groups.tolist())) < 3:
        raise DataFormatError(f"{table.path}: group-disjoint splits need at least 3 groups")
    outer = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    rest, test = next(outer.split(keep, labels[keep], groups))
    inner = GroupShuffleSplit(
        n_splits=1, test_size=val_fraction / (1 - test_fraction), random_state=seed + 1
    )
    train, val = next(inner.split(rest, labels[keep][rest], groups[rest]))
    parts = {"train": keep[rest[train]], "val": keep[rest[val]], "test": keep[test]}
    return {s: np.sort(v) for s, v in parts.items()}, f"group-disjoint (seed {seed})"


class DecodedRows(Dataset):
    """Every row decoded as evaluation reads it, for ``prepare``'s DataLoader workers."""

    def __init__(self, table: ManifestTable, readers: Mapping[str, Reader]) -> None:
        self.table, self.readers = table, readers

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, row: int) -> tuple[int, dict[str, Any], dict[str, str]]:
        out: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for m, reader in self.readers.items():
            value = self.table.columns[m][row]
            if value is None:
                continue
            path = str(self.table.path.parent / value) if reader.reads_files else value
            try:
                loaded = reader.load(path, False, None)
                out[m] = loaded.numpy() if isinstance(loaded, torch.Tensor) else np.asarray(loaded)
            except UnipairError as e:
                errors[m] = str(e)
        return row, out, errors


def check_manifest(
    path: str | Path,
    modalities: Mapping[str, Mapping[str, Any]] | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ManifestTable, list[tuple[int, str, str]]]:
    """Every problem of a manifest, before any training: missing or empty files, rows without
    a modality, and every file that fails to decode (each row decoded as evaluation reads
    it, in ``workers`` processes). Returns (row, column, reason) triples."""
    table = read_manifest(path)
    _check_ids(table)
    _labels(table)
    readers = _readers(table, modalities)
    problems = _problems(table, readers)
    bad = {i for i, _, _ in problems}
    loader = DataLoader(
        DecodedRows(table, readers), batch_size=None, num_workers=workers, collate_fn=lambda x: x
    )
    for done, (row, _, errors) in enumerate(loader, 1):
        if row not in bad:
            problems += [(row, m, why) for m, why in errors.items()]
        if progress is not None:
            progress(done, len(table))
    return table, sorted(problems)


class ManifestDataset(MultimodalDataset):
    """Some rows of a manifest, decoded when fetched (or read from a prepared cache)."""

    def __init__(
        self,
        table: ManifestTable,
        readers: Mapping[str, Reader],
        rows: np.ndarray,
        labels: Tensor,
        seed: int,
        augment: bool,
        on_error: OnError = "raise",
        cache: Any = None,
    ) -> None:
        self.table, self.readers, self.seed = table, dict(readers), seed
        self.rows = torch.as_tensor(rows, dtype=torch.long)
        self.labels = labels[self.rows]
        self.index = self.rows
        self.present = {
            m: torch.tensor(
                [table.columns[m][i] is not None for i in rows.tolist()], dtype=torch.bool
            )
            for m in self.readers
        }
        self.augment, self.on_error, self.cache = augment, on_error, cache

    def eval_view(self) -> ManifestDataset:
        if not self.augment:
            return self
        view = ManifestDataset.__new__(ManifestDataset)
        view.__dict__.update(self.__dict__)
        view.augment = False
        return view

    def __getitems__(self, indices: Sequence[int]) -> MultimodalBatch:
        return self.loader_batch(indices).dequantize()

    def loader_batch(self, indices: Sequence[int]) -> MultimodalBatch:
        """Frames stay ``quantized`` (uint8) until ``on_device``; the epoch is the sampler's."""
        return self._batch(torch.as_tensor(list(indices)), epoch_of(indices))

    def augmentation(self) -> dict[str, str]:
        if not self.augment:
            return {}
        return {
            m: f"the {r.kind} reader's {r.augments} (dataset option augment: true)"
            for m, r in self.readers.items()
            if r.augments
        }

    def input_fingerprint(self, modality: str) -> str | None:
        """The reader's parameters, and each row's cell with its file's size and modification
        time (as a prepared cache checks its sources)."""
        reader, cells = self.readers[modality], self.table.columns[modality]
        root = self.table.path.parent
        h = hashlib.sha256(f"{reader.fingerprint()}|{self.on_error}".encode())
        for row in self.rows.tolist():
            value = cells[row]
            h.update(f"{row}|{value}".encode())
            if value is not None and reader.reads_files:
                try:
                    st = (root / media_file(value)).stat()
                    h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
                except OSError:
                    h.update(b"|missing")
        return h.hexdigest()[:20]

    def without(self, modalities: Iterable[str]) -> ManifestDataset:
        gone = set(modalities)
        view = ManifestDataset.__new__(ManifestDataset)
        view.__dict__.update(self.__dict__)
        view.readers = {m: r for m, r in self.readers.items() if m not in gone}
        view.present = {m: p for m, p in self.present.items() if m not in gone}
        return view

    def fetch(self, indices: Tensor, epoch: int = -1) -> MultimodalBatch:
        return self._batch(indices, epoch).dequantize()

    def _batch(self, indices: Tensor, epoch: int) -> MultimodalBatch:
        from unipair.data.media.arrays import pad_sequences
        from unipair.data.media.transforms import sample_generator

        rows = self.rows[indices].tolist()
        present = {m: p[indices].clone() for m, p in self.present.items()}
        # fixed shapes are written straight into their batch (no stack), frames as uint8
        # (quantized); sequences are padded
        quantized: dict[str, Affine] = {}
        shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for m, reader in self.readers.items():
            if reader.variable_length:
                continue
            affine, shape = reader.quantization(self.augment), reader.shape()
            if affine is None:
                shapes[m] = ((len(rows), *shape), torch.float32)
            else:  # uint8 channels-last: [C, ...] is stored as [..., C]
                quantized[m] = affine
                shapes[m] = ((len(rows), *shape[1:], shape[0]), torch.uint8)
        inputs = batch_tensors(shapes)
        samples: dict[str, list[Tensor | None]] = {m: [] for m in self.readers}
        for j, row in enumerate(rows):
            generator = None
            if self.augment:
                generator = sample_generator(self.seed, max(epoch, 0), row)
            for m, reader in self.readers.items():
                out = inputs[m][j] if m in inputs else None
                x = None
                if bool(present[m][j]):
                    x = self._sample(row, m, reader, generator, out)
                    if x is None:  # on_error: skip — this modality of the row is missing
                        present[m][j] = False
                if x is None and out is not None:
                    out.zero_()
                samples[m].append(x)
        valid: dict[str, Tensor] = {}
        for m, reader in self.readers.items():
            if reader.variable_length:
                seqs = [
                    x if x is not None else torch.zeros((0, *reader.shape()[1:]))
                    for x in samples[m]
                ]
                x, v = pad_sequences(seqs)
                if x.shape[1] == 0:  # nothing present in this batch: one padded step
                    x = torch.zeros((len(rows), 1, *x.shape[2:]), dtype=x.dtype)
                    v = torch.zeros((len(rows), 1), dtype=torch.bool)
                inputs[m], valid[m] = x, v
        return MultimodalBatch(
            inputs, present, self.labels[indices], self.rows[indices], valid=valid,
            quantized=quantized,
        )  # fmt: skip

    def _sample(
        self,
        row: int,
        m: str,
        reader: Reader,
        generator: torch.Generator | None,
        out: Tensor | None = None,
    ) -> Tensor | None:
        value = str(self.table.columns[m][row])  # present rows have a value
        try:
            if self.cache is not None:
                loaded = self.cache.get(m, row, self.table.lines[row])
            else:
                path = str(self.table.path.parent / value) if reader.reads_files else value
                loaded = reader.load(path, self.augment, generator)
            return reader.finish(loaded, self.augment, generator, out)
        except UnipairError as e:
            where = f"{self.table.where(row)}, column {m!r}"
            if self.on_error == "skip":
                warnings.warn(f"{where}: {e}; treated as missing (on_error: skip)", stacklevel=2)
                return None
            raise DataFormatError(f"{where}: {e}") from None


def load_manifest(
    path: str | Path,
    modalities: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    on_error: OnError = "raise",
    augment: bool = True,
    prepared: str | None = None,
    classes: Sequence[str] | None = None,
) -> MultimodalData:
    """A manifest as a dataset. ``modalities`` configures each column's reader (``kind`` and
    its options; by default every non-reserved column, kind from the file extension).
    ``on_error: skip`` drops rows whose files are missing (recorded in ``info``) and treats a
    file that fails to decode as a missing modality; by default both are errors naming the
    row. ``augment: false`` trains on the evaluation view (no random crops or frames).
    ``prepared``: a cache folder written by ``unipair prepare``. ``classes``: the class names
    in index order (a label outside them is an error); by default the sorted label values."""
    path = Path(path)
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return manifest_data(
        read_manifest(path),
        modalities,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        on_error=on_error,
        augment=augment,
        prepared=prepared,
        classes=classes,
    )


def manifest_data(
    table: ManifestTable,
    modalities: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    name: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    on_error: OnError = "raise",
    augment: bool = True,
    prepared: str | None = None,
    classes: Sequence[str] | None = None,
    info: Mapping[str, Any] | None = None,
) -> MultimodalData:
    """A dataset from a manifest table already in memory: what :func:`load_manifest` builds
    from a file, and what the standard benchmarks' loaders build from their own layouts
    (absolute paths in the cells, their published splits in a ``split`` column)."""
    path = table.path
    _check_ids(table)
    labels, classes = _labels(table, classes)
    readers = _readers(table, modalities)
    problems = _problems(table, readers)
    if problems and on_error == "raise":
        raise DataFormatError(
            f"{table.path}: {len({i for i, _, _ in problems})} row(s) cannot be read: "
            f"{format_problems(table, problems)}. List them all with `unipair datasets check "
            f"{path}`, or set on_error: skip to leave them out"
        )
    bad = {i for i, _, _ in problems}
    keep = np.array([i for i in range(len(table)) if i not in bad], dtype=np.int64)
    idx, how = _splits(table, labels, keep, seed, val_fraction, test_fraction)
    c = int(labels.max()) + 1
    absent = sorted(set(range(c)) - set(labels[idx["train"]].tolist()))
    if absent:
        names = [classes[k] for k in absent] if classes else absent
        raise DataFormatError(f"{table.path}: class(es) {names} have no training row")
    cache = None
    if prepared is not None:
        from unipair.data.prepared import open_cache

        cache = open_cache(Path(prepared), table, readers)
    label_tensor = torch.as_tensor(labels)
    parts = {
        s: ManifestDataset(
            table, readers, idx[s], label_tensor, seed, augment and s == "train", on_error, cache
        )
        for s in SPLITS
    }
    spec = TaskSpec(
        tuple(
            ModalitySpec(m, r.shape(), variable_length=r.variable_length, vocab=r.vocab)
            for m, r in readers.items()
        ),
        c,
    )
    manifest_hash = (
        hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else str(path)
    )
    fp = fingerprint(
        "manifest", manifest_hash, sorted((m, r.fingerprint()) for m, r in readers.items()),
        *(idx[s] for s in SPLITS),
    )  # fmt: skip
    info = {"source": str(path), "split": how, "augment": augment, **dict(info or {})}
    if classes:
        info["classes"] = classes
    if problems:
        info["skipped_rows"] = [
            {"line": table.lines[i], "column": m, "reason": why} for i, m, why in problems
        ]
    if prepared is not None:
        info["prepared"] = str(prepared)
    return MultimodalData(name or path.stem, spec, seed=seed, fingerprint=fp, info=info, **parts)
