"""Per-method report figures, by registry: ``compare`` and ``unipair viz`` ask for the figures
of a run's method without naming any method, and a new method adds its own by decorator.

A report is ``report(run_dir, out) -> list[Figure]``: it reads one finished run and writes
PNGs into the (existing) folder ``out``; each :class:`Figure` carries its caption, so whoever
shows the figure (the compare report, the command line) need not know what it depicts. The
built-in reports (``evaluation/reports/``) and their plotting code load on the first lookup,
so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unipair.engine.config import load_config
from unipair.errors import RunDirError, UnknownNameError
from unipair.registry import Registry

__all__ = [
    "Figure",
    "Report",
    "get_report",
    "has_report",
    "method_report",
    "methods_with_reports",
    "register_comparison",
    "register_report",
    "runs_comparison",
]


@dataclass(frozen=True)
class Figure:
    """A written PNG with the caption that says what it shows."""

    name: str
    path: Path
    caption: str


Report = Callable[[Path, Path], list[Figure]]
#: several runs of one method drawn side by side: ``comparison(run_dirs, out) -> Figure``
Comparison = Callable[[list[Path], Path], Figure]

_REPORTS: Registry[Report] = Registry("method report")
_COMPARISONS: Registry[Comparison] = Registry("method comparison")


def register_report(method_name: str) -> Callable[[Report], Report]:
    """Decorator: ``report`` draws the figures of runs of method ``method_name``."""
    return _REPORTS.register(method_name)


def register_comparison(method_name: str) -> Callable[[Comparison], Comparison]:
    """Decorator: ``comparison`` draws several runs of method ``method_name`` side by side."""
    return _COMPARISONS.register(method_name)


def runs_comparison(run_dirs: list[Path], out: str | Path) -> Figure | None:
    """The side-by-side figure of several runs of one method, if that method registers one."""
    names = {load_config(Path(r) / "config.yaml").method.name for r in run_dirs}
    _reports()
    if len(run_dirs) < 2 or len(names) != 1 or next(iter(names)) not in _COMPARISONS:
        return None
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    return _COMPARISONS.get(next(iter(names)))([Path(r) for r in run_dirs], target)


def _reports() -> Registry[Report]:
    import unipair.evaluation.reports  # noqa: F401  (registers the built-in reports)

    return _REPORTS


def methods_with_reports() -> list[str]:
    return _reports().names()


def has_report(method: str) -> bool:
    return method in _reports()


def get_report(method: str) -> Report:
    """The report of ``method``; an :class:`UnknownNameError` naming those that exist if none."""
    if not has_report(method):
        known = ", ".join(methods_with_reports()) or "(none)"
        raise UnknownNameError(f"no report for method {method!r}; methods with reports: {known}")
    return _REPORTS.get(method)


def method_report(run_dir: str | Path, out: str | Path | None = None) -> list[Figure]:
    """Write the figures of one finished run (default folder: ``run_dir/viz``)."""
    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise RunDirError(f"{run} is not a run directory (no config.yaml)")
    report = get_report(load_config(run / "config.yaml").method.name)
    target = Path(out) if out is not None else run / "viz"
    target.mkdir(parents=True, exist_ok=True)
    return report(run, target)
