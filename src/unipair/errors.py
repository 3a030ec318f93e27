"""One exception hierarchy for what a *user* can get wrong.

Everything a user can cause (a bad option, an unknown name, a malformed file, a missing file, a
run directory in the wrong state) raises a :class:`UnipairError` subclass with a message that
names the option, file, array or run and what was expected. The command line prints such an
error as one line and exits with code 2; any other exception is a bug and keeps its traceback.

Each subclass also derives from the matching built-in (``ValueError``, ``KeyError``, ...), so
code that caught the built-in before keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataFormatError",
    "DataNotFoundError",
    "RunDirError",
    "TrainingError",
    "UnipairError",
    "UnknownNameError",
    "WriteError",
]


class UnipairError(Exception):
    """Base of every error a user can cause; the CLI shows its message and exits with 2."""


class ConfigError(UnipairError, ValueError):
    """An option, hyperparameter or config file is invalid; the message names the key."""


class UnknownNameError(UnipairError, KeyError):
    """A name (method, dataset, encoder, fusion, modality, ...) is not registered or not known.

    ``str()`` is the plain message, not the ``repr`` that ``KeyError`` would give.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataFormatError(UnipairError, ValueError):
    """A data file or array does not follow its documented layout; the message says where."""


class DataNotFoundError(UnipairError, FileNotFoundError):
    """A data file or folder the user pointed at does not exist."""


class RunDirError(UnipairError):
    """A run directory is in the wrong state: taken, unfinished, not a run, or mismatched."""


class WriteError(UnipairError, OSError):
    """An output cannot be written: read-only or full disk, no permission, or in use by
    another unipair process; the message names the path."""


class TrainingError(UnipairError, RuntimeError):
    """Training cannot produce an honest result (e.g. every epoch's score is NaN)."""
