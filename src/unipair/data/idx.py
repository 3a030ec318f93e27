"""Reader for the IDX format (MNIST and friends), gzipped or not.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values in big-endian row-major order. Everything is validated against the
header, because a truncated download otherwise surfaces later as a confusing reshape error.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from unipair.errors import DataFormatError, DataNotFoundError

__all__ = ["IdxFormatError", "read_idx"]

#: IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(DataFormatError):
    """The file is not valid IDX; the message names the file and what is wrong."""


def read_idx(
    path: str | Path, *, ndim: int | None = None, dtype: str | np.dtype | None = None
) -> np.ndarray:
    """The array stored in ``path`` (native byte order, writable).

    Gzip is detected from the content, not the suffix. ``ndim`` / ``dtype`` are optional checks
    of what the caller expects (e.g. ``ndim=3, dtype="u1"`` for MNIST images).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"IDX file {path} does not exist")
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxFormatError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4:
        raise IdxFormatError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    zero, code, nd = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in IDX_DTYPES:
        raise IdxFormatError(
            f"{path}: bad IDX magic {raw[:4].hex()} (expected 0000 + type code in "
            f"{[hex(c) for c in IDX_DTYPES]} + ndim)"
        )
    if nd < 1:
        raise IdxFormatError(f"{path}: IDX header declares {nd} dimensions")
    header = 4 + 4 * nd
    if len(raw) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    dims = struct.unpack(f">{nd}I", raw[4:header])
    dt = np.dtype(IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if len(raw) - header != expected:
        raise IdxFormatError(
            f"{path}: header promises shape {list(dims)} of {dt.name} ({expected} bytes) but the "
            f"file holds {len(raw) - header} bytes of data"
        )
    if ndim is not None and nd != ndim:
        raise IdxFormatError(f"{path}: expected {ndim} dimensions, found {nd} ({list(dims)})")
    if dtype is not None and dt.newbyteorder("=") != np.dtype(dtype).newbyteorder("="):
        raise IdxFormatError(f"{path}: expected values of type {np.dtype(dtype)}, found {dt}")
    arr = np.frombuffer(raw, dtype=dt, offset=header).reshape(dims)
    return arr.astype(dt.newbyteorder("="), copy=True)
