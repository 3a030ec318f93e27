"""Progress output: a rich progress bar with live metrics on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["Reporter", "make_reporter"]


def _short(logs: dict[str, Any], keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k}={logs[k]:.4f}" for k in keys if k in logs)


class Reporter:
    """Silent base: rank > 0 and ``progress: none`` use it."""

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None: ...
    def advance(self, loss: float | None) -> None: ...
    def end_epoch(self, row: dict[str, Any], best: bool) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainReporter(Reporter):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epochs = 0

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.epochs = epochs

    def end_epoch(self, row: dict[str, Any], best: bool) -> None:
        keys = ("train/loss", "val/acc", "val/f1", "val/loss")
        mark = " *" if best else ""
        done = f"{row['epoch'] + 1}/{self.epochs}"
        print(f"{self.prefix}epoch {done:>7}  {_short(row, keys)}{mark}", flush=True)

    def message(self, text: str) -> None:
        print(f"{self.prefix}{text}", flush=True)


class RichReporter(Reporter):
    def __init__(self, prefix: str) -> None:
        self.console = Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=True,
        )
        self.prefix = prefix
        self.task: Any = None
        self.progress.start()

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        desc = f"{self.prefix}epoch {epoch + 1}/{epochs}"
        if self.task is None:
            self.task = self.progress.add_task(desc, total=batches, info="")
        else:
            self.progress.reset(self.task, total=batches, description=desc, info="")

    def advance(self, loss: float | None) -> None:
        info = "" if loss is None else f"loss {loss:.4f}"
        self.progress.update(self.task, advance=1, info=info)

    def end_epoch(self, row: dict[str, Any], best: bool) -> None:
        keys = ("train/loss", "val/acc", "val/f1", "val/loss")
        star = " [green]*best[/]" if best else ""
        self.progress.console.print(
            f"{self.prefix}epoch {row['epoch']:>3}  {_short(row, keys)}{star}"
        )

    def message(self, text: str) -> None:
        self.progress.console.print(f"{self.prefix}{text}")

    def close(self) -> None:
        self.progress.stop()


def make_reporter(mode: str, is_main: bool, prefix: str = "") -> Reporter:
    if not is_main or mode == "none":
        return Reporter()
    if mode == "rich" or (mode == "auto" and sys.stdout.isatty()):
        return RichReporter(prefix)
    return PlainReporter(prefix)
