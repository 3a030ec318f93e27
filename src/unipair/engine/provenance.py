"""Which weights files a run's encoders were built on.

Every checkpoint and ``summary.json`` hold ``weights``: for each modality whose encoder was
built on a file (``weights:``, ``hf:<dir>``), that encoder's ``weights_info`` (path, sha256,
size, and the keys left missing or unexpected by ``strict: false``). ``config.yaml`` stays
the user's resolved config (paths only): a hash is a fact about a file, read when the encoder
is built. Resume refuses a file whose hash differs from the one recorded in ``last.ckpt``, and
``compare`` refuses to reuse a finished run whose files changed since.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from unipair.errors import DataNotFoundError, RunDirError
from unipair.models.pretrained import weights_digest

__all__ = ["changed_weights", "check_same_weights", "encoder_weights"]


def encoder_weights(method: Any) -> dict[str, dict[str, Any]]:
    """``weights_info`` of every encoder built on a file, by modality (by module name for an
    encoder the method does not map to one modality)."""
    named = {id(e): m for m, e in method.modality_encoders().items()}
    out: dict[str, dict[str, Any]] = {}
    module: nn.Module
    for name, module in method.named_modules():
        info = getattr(module, "weights_info", None)
        if isinstance(info, Mapping):
            out[named.get(id(module), name)] = dict(info)
    return out


def _difference(m: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    if old is None:
        return f"modality {m!r} now loads weights {new and new['path']} but was trained without"
    if new is None:
        return f"modality {m!r} was trained on weights {old['path']} but now loads none"
    return (
        f"modality {m!r} was trained on weights {old['path']} (sha256 {old['sha256']}), but "
        f"{new['path']} now has sha256 {new['sha256']}"
    )


def check_same_weights(
    recorded: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]], what: str
) -> None:
    """A :class:`RunDirError` beginning with ``what`` when any modality's weights hash differs
    from the recorded one, naming the modality, the file and both hashes."""
    for m in sorted(set(recorded) | set(current)):
        old, new = recorded.get(m), current.get(m)
        if old is None or new is None or old.get("sha256") != new.get("sha256"):
            raise RunDirError(
                f"{what}: {_difference(m, old, new)}; put the original file back, or start a "
                "new run"
            )


def changed_weights(recorded: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why the recorded weights files no longer are what a run was trained on (each file hashed
    again), or None when every one still has its recorded hash."""
    for m, info in sorted(recorded.items()):
        try:
            sha256, _ = weights_digest(info["path"])
        except DataNotFoundError:
            return f"modality {m!r} was trained on weights {info['path']}, which no longer exists"
        if sha256 != info.get("sha256"):
            return _difference(m, info, {**info, "sha256": sha256})
    return None
