"""Choosing the numeric precision: ``auto`` picks the fastest one the device runs natively.

On a CPU without native bfloat16 instructions (x86 AVX512-BF16 or AMX, ARM BF16) PyTorch
emulates bf16, which is much slower than fp32: MLA at CREMA-D shapes ran 195 s per step in
``bf16-mixed`` against 85 s in fp32 on such a machine, while on a CPU with AVX512-BF16 bf16 was
2.4x faster than fp32. A run records the precision it actually used, not the one requested.
"""

from __future__ import annotations

import functools
import platform
import warnings
from pathlib import Path

import torch

__all__ = ["cpu_has_native_bf16", "resolve_precision", "warn_if_emulated"]

_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 and aarch64 /proc/cpuinfo flags


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (read once from /proc/cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():  # macOS, Windows: Apple silicon has BF16 since M2; be cautious
        return platform.machine() == "arm64" and platform.system() == "Darwin"
    flags: set[str] = set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & _NATIVE_BF16_FLAGS)


def _uses_gpu(accelerator: str) -> bool:
    if accelerator in ("gpu", "cuda"):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def resolve_precision(requested: str, accelerator: str) -> str:
    """``auto`` -> bf16-mixed on a GPU with bf16 (16-mixed without) or a CPU with native
    bf16, else 32-true; any other value is returned unchanged."""
    if requested != "auto":
        return requested
    if _uses_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


_warned = False


def warn_if_emulated(precision: str, device_type: str) -> None:
    """Warn once per process when bfloat16 on this CPU would be emulated (slow)."""
    global _warned
    if _warned or device_type != "cpu" or not precision.startswith("bf16"):
        return
    if not cpu_has_native_bf16():
        _warned = True
        warnings.warn(
            f"precision {precision!r} on this CPU is emulated (no AVX512-BF16/AMX/BF16 "
            "instructions) and usually several times slower than 32-true; use "
            "--precision auto to pick the fastest native precision",
            UserWarning,
            stacklevel=2,
        )
