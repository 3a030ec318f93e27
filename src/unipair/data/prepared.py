"""Prepared caches: every deterministic part of a manifest-backed dataset decoded once,
memory-mapped.

``unipair prepare SOURCE --out DIR`` (a manifest, or a registered loader such as ``crema_d``
with its options) decodes each row as evaluation reads it (features, frames resized to the eval
size as uint8, token ids) into one ``.npy`` per modality (fixed shapes) or values + offsets
(variable lengths), with ``prepared.json`` recording the source, its options and a fingerprint
of what was decoded (the table's cells, each file's size and modification time, every reader's
parameters). Training on the folder reads the memory maps and applies the random parts (crops,
flips) on top; with a random frame rule the cached frames are the evaluation ones (the cache
fixes the frame choice; spatial augmentation stays random).

A changed parameter or source gives another fingerprint: ``prepare`` rebuilds, and training on
a stale folder is refused. The folder is written under a temporary name and renamed when
complete, so a crash never leaves a partial cache under its final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from unipair.data.manifest import DecodedRows, ManifestTable, _problems
from unipair.data.readers import Reader, media_file
from unipair.errors import ConfigError, DataFormatError
from unipair.io import write_error, write_json

__all__ = ["load_prepared", "open_cache", "prepare", "source_fingerprint"]

VERSION = 1


def source_fingerprint(table: ManifestTable, readers: Mapping[str, Reader]) -> str:
    """The table's cells, every referenced file's size and modification time, and every
    reader's parameters: what a cache is valid for."""
    h = hashlib.sha256(json.dumps(table.columns, sort_keys=True).encode())
    root = table.path.parent
    for m, reader in readers.items():
        h.update(f"{m}:{reader.fingerprint()}".encode())
        if not reader.reads_files:
            continue
        for v in table.columns[m]:
            if v is None:
                continue
            try:
                st = (root / media_file(v)).stat()
                h.update(f"{v}|{st.st_size}|{st.st_mtime_ns}".encode())
            except OSError:
                h.update(f"{v}|missing".encode())
    return h.hexdigest()[:20]


def load_prepared(path: str | Path, **options: Any) -> Any:
    """A prepared folder as a dataset: its source loaded with the options it was prepared with
    (``options`` may change those that do not change the decoded samples, e.g. the seed)."""
    from unipair.data.registry import create

    meta = _meta(Path(path))
    return create(meta["source"], **{**meta["options"], **options, "prepared": str(path)})


def _meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / "prepared.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataFormatError(f"{folder}: not a prepared dataset ({e})") from None
    if meta.get("version") != VERSION:
        raise DataFormatError(f"{folder}: prepared by another unipair version; prepare again")
    return meta


def prepare(
    source: str | Path,
    out: str | Path,
    options: Mapping[str, Any] | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Decode every row of the manifest-backed dataset ``source`` (a manifest path or a
    registered loader, with ``options``) into the folder ``out`` (see module doc); an existing
    folder with the same fingerprint is kept as it is."""
    from unipair.data.manifest import ManifestDataset
    from unipair.data.registry import create

    options = {k: v for k, v in dict(options or {}).items() if k != "prepared"}
    source = str(Path(source).resolve()) if Path(source).exists() else str(source)
    data = create(source, **options)
    if not isinstance(data.train, ManifestDataset):
        raise ConfigError(
            f"{source} is held in memory already; prepare is for datasets read from media files"
        )
    table, readers = data.train.table, data.train.readers
    excluded = {i for i, _, _ in _problems(table, readers)}
    out = Path(out)
    fp = source_fingerprint(table, readers)
    if (out / "prepared.json").is_file():
        try:
            if _meta(out).get("fingerprint") == fp:
                return out
        except DataFormatError:
            pass
    on_error = options.get("on_error", "raise")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        skipped = _write(tmp, table, readers, excluded, on_error, workers, progress)
        skipped += data.info.get("skipped_rows", [])
        meta = {
            "version": VERSION,
            "source": source,
            "options": json.loads(json.dumps(options)),
            "fingerprint": fp,
            "rows": len(table),
            "skipped": skipped,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json(tmp / "prepared.json", meta)
        _publish(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(out, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(
    folder: Path,
    table: ManifestTable,
    readers: Mapping[str, Reader],
    excluded: set[int],
    on_error: str,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    n = len(table)
    fixed: dict[str, np.memmap] = {}
    chunks: dict[str, list[np.ndarray]] = {m: [] for m, r in readers.items() if r.variable_length}
    lengths: dict[str, np.ndarray] = {m: np.zeros(n, np.int64) for m in chunks}
    skipped: list[dict[str, Any]] = []
    loader = DataLoader(
        DecodedRows(table, readers), batch_size=None, num_workers=workers, collate_fn=lambda x: x
    )
    for done, (row, loaded, errors) in enumerate(loader, 1):
        if row in excluded:
            continue
        for m, why in errors.items():
            if on_error != "skip":
                raise DataFormatError(f"{table.where(row)}, column {m!r}: {why}")
            skipped.append({"line": table.lines[row], "column": m, "reason": why})
        for m, x in loaded.items():
            if m in chunks:
                chunks[m].append(x)
                lengths[m][row] = len(x)
                continue
            if m not in fixed:
                fixed[m] = np.lib.format.open_memmap(
                    folder / f"{m}.npy", mode="w+", dtype=x.dtype, shape=(n, *x.shape)
                )
            fixed[m][row] = x
        if progress is not None:
            progress(done, n)
    for arr in fixed.values():
        arr.flush()
    names = list(readers)
    for m in readers:
        if m in chunks:
            values = np.concatenate(chunks[m]) if chunks[m] else np.zeros((0,), np.int64)
            np.save(folder / f"{m}.values.npy", values)
            np.save(folder / f"{m}.offsets.npy", np.concatenate([[0], np.cumsum(lengths[m])]))
        elif m not in fixed:
            raise DataFormatError(f"{table.path}: no row of column {m!r} could be decoded")
    stored = {
        m: np.array([table.columns[m][i] is not None and i not in excluded for i in range(n)], bool)
        for m in readers
    }
    for entry in skipped:
        row = table.lines.index(entry["line"])
        stored[entry["column"]][row] = False
    np.save(folder / "stored.npy", np.stack([stored[m] for m in names], axis=1))
    return skipped


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished folder into place; an old one is moved aside first, then removed."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


class Cache:
    """Read access to a prepared folder; the memory maps are opened lazily in each process
    (DataLoader workers included), never pickled."""

    def __init__(self, folder: Path, names: list[str], skipped: list[dict[str, Any]]) -> None:
        self.folder, self.names = folder, names
        self.reasons = {(e["line"], e["column"]): e["reason"] for e in skipped}
        self._arrays: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": {}}

    def _open(self, key: str) -> Any:
        # copy-on-write maps: writable views for torch (no copy, no read-only warning) whose
        # writes, were any made, would stay in this process and never reach the file
        if key not in self._arrays:
            self._arrays[key] = np.load(self.folder / f"{key}.npy", mmap_mode="c")
        return self._arrays[key]

    def get(self, m: str, row: int, line: int = -1) -> np.ndarray:
        if not bool(self._open("stored")[row, self.names.index(m)]):
            why = self.reasons.get((line, m), "not decodable")
            raise DataFormatError(f"was left out when prepared ({why})")
        if (self.folder / f"{m}.npy").is_file():
            return self._open(m)[row]  # a view: the reader copies it into the batch once
        offsets = self._open(f"{m}.offsets")
        return np.array(self._open(f"{m}.values")[offsets[row] : offsets[row + 1]])


def open_cache(folder: Path, table: ManifestTable, readers: Mapping[str, Reader]) -> Cache:
    """The cache in ``folder``, refused if its sources or parameters changed since."""
    meta = _meta(folder)
    if meta["fingerprint"] != source_fingerprint(table, readers):
        raise DataFormatError(
            f"{folder}: the manifest, its files or the reader options changed since `unipair "
            f"prepare`; prepare again (unipair prepare {table.path} --out {folder})"
        )
    return Cache(folder, list(readers), meta.get("skipped", []))
