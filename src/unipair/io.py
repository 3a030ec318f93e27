"""File output that is safe: atomic writes (a crash never leaves a half-written checkpoint,
cache or result), one clear error when the disk is full or read-only, and exclusive locks so
two processes never write one run or comparison folder."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unipair.errors import WriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_path", "exclusive_lock", "make_dir", "write_error", "write_json", "write_text"]

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def write_error(path: str | os.PathLike[str], e: OSError) -> OSError:
    """A :class:`WriteError` naming ``path`` for a full or read-only disk or a permission
    problem; any other OSError is returned unchanged (it may be a bug)."""
    reason = _REASONS.get(e.errno or 0)
    if reason is None:
        return e
    return WriteError(f"cannot write {path}: {reason}")


def make_dir(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p``, with a clear error for a read-only or forbidden location."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success it replaces ``path`` in one rename.

    On any exception the temporary file is removed and ``path`` is left as it was; a full,
    read-only or forbidden disk becomes a :class:`WriteError` naming ``path``.
    """
    target = Path(path)
    make_dir(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise write_error(target, e) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes owner-only files; give the usual mode
        yield tmp
        os.replace(tmp, target)
    except OSError as e:
        raise write_error(target, e) from None
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def exclusive_lock(folder: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold ``folder/.lock`` exclusively; another process holding it is a clear error.

    The operating system releases the lock when its holder exits, even after ``kill -9``,
    so a stale lock file never blocks anyone. (No locking where ``fcntl`` is missing.)
    """
    path = make_dir(folder) / ".lock"
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise WriteError(
                f"{folder} is in use by another unipair process (pid {holder}, {what}); wait "
                "for it to finish, or use another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def _write(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
