"""Glue between the ``diagnose`` command and the library: options, the runs (planned, trained
and reused by compare's machinery), progress, outputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console

from unipair.engine.config import (
    MethodConfig,
    RunConfig,
    apply_overrides,
    format_errors,
    read_yaml,
    set_dotted,
)
from unipair.errors import ConfigError
from unipair.evaluation.analysis import DEFAULT_RATES
from unipair.evaluation.compare import plan_runs, run_compare
from unipair.evaluation.compare_cli import progress_printer
from unipair.evaluation.diagnose import (
    DEFAULT_EPOCHS,
    Evidence,
    Recommendation,
    measure_run,
    recommend,
    summarize,
)
from unipair.evaluation.diagnose_report import overall_lines, terminal_table, write_diagnosis

__all__ = ["DiagnoseResult", "check_seeds", "load_diagnose_config", "run_diagnose_command"]

SOURCE = "diagnose options"


@dataclass
class DiagnoseResult:
    """The runs, any failures (then no diagnosis), the table, the recommendation, the files."""

    out: Path
    runs: list[dict[str, Any]]
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    table: dict[str, Any] = field(default_factory=dict)
    recommendation: Recommendation | None = None
    paths: dict[str, Path] = field(default_factory=dict)


def check_seeds(seeds: Sequence[int] | None) -> list[int]:
    """``--seeds``: default one seed (0); otherwise distinct integers in [0, 2**32)."""
    if seeds is None:
        return [0]
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("--seeds: expected at least one seed, e.g. --seeds 0 or --seeds 0,1,2")
    bad = [s for s in seeds if not 0 <= s < 2**32]
    if bad:
        raise ConfigError(f"--seeds: expected integers in [0, 2**32), got {bad}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: seeds repeat: {seeds}")
    return seeds


def load_diagnose_config(
    dataset: str,
    config: str | None,
    overrides: Sequence[str],
    epochs: int | None,
    root: str | None = None,
) -> tuple[RunConfig, dict[str, Any]]:
    """The shared run config and joint's hyperparameters.

    Precedence: ``--set`` over the flags (DATASET, ``--epochs`` [10], ``--root``) over the
    config file. A ``method:`` section must name joint, the method diagnosed; its
    hyperparameters, and those under ``compare.hparams.joint`` (which win, as in compare),
    apply to the joint runs. The test split is withheld from every run."""
    data: dict[str, Any] = {}
    source = SOURCE
    if config is not None:
        data, source = read_yaml(config)
    section = dict(data.pop("compare", None) or {})
    set_dotted(data, "dataset.name", dataset)
    set_dotted(data, "train.epochs", DEFAULT_EPOCHS if epochs is None else epochs)
    if root is not None:
        set_dotted(data, "dataset.options.root", root)
    apply_overrides(data, overrides)
    method = data.pop("method", None)
    method = {"name": method} if isinstance(method, str) else dict(method or {})
    if method.get("name", "joint") != "joint":
        raise ConfigError(
            f"{source}: the method section names {method['name']!r}; diagnose trains joint "
            "(and unimodal references): give joint's hyperparameters there, or none"
        )
    hparams = {
        **(method.get("hparams") or {}),
        **((section.get("hparams") or {}).get("joint") or {}),
    }
    try:
        MethodConfig.model_validate({"name": "joint", "hparams": hparams})
    except ValidationError as e:
        raise ConfigError(format_errors(e, f"{source} (method)")) from None
    cfg = RunConfig.from_mapping(data, source)
    cfg.train.test = False  # a diagnosis guides tuning: it never reads the test split
    return cfg, hparams


def run_diagnose_command(
    *,
    dataset: str,
    seeds: list[int] | None,
    config: str | None,
    overrides: list[str],
    epochs: int | None,
    jobs: int = 1,
    threads: int | None = None,
    out: str,
    root: str | None = None,
    command: str = "",
    console: Console | None = None,
) -> DiagnoseResult:
    console = console or Console()
    seeds = check_seeds(seeds)
    cfg, hparams = load_diagnose_config(dataset, config, overrides, epochs, root)
    from unipair.engine.predict import load_data  # validates the data early, names modalities

    data = load_data(cfg)
    task, fingerprint = data.spec, data.fingerprint
    del data  # each run loads its own
    specs = plan_runs(cfg, [("joint", "joint", hparams)], seeds, out, True, task, fingerprint)
    console.print(
        f"[bold]diagnose[/] {cfg.dataset.name}: joint + {len(task.names)} unimodal references, "
        f"{cfg.train.epochs} epochs, seeds {seeds}, {jobs} at a time -> {out}",
        highlight=False,
    )
    on_done = progress_printer(console, len(specs), "val")

    ran = run_compare(specs, out, jobs, DEFAULT_RATES, on_done, threads, measure=measure_run)
    result = DiagnoseResult(Path(out), ran.runs, ran.failures)
    if ran.failures:
        for label, seed, error in ran.failures:
            console.print(f"[red]failed: {label} seed {seed}: {error}[/]", highlight=False)
        console.print("[red]no diagnosis: it needs every run[/]", highlight=False)
        return result
    result.table = summarize(ran.runs, task.names)
    evidence = Evidence.from_table(result.table)
    result.recommendation = recommend(evidence)
    context = {
        "dataset": cfg.dataset.name,
        "epochs": cfg.train.epochs,
        "data_fingerprint": fingerprint,
        "command": command,
    }
    result.paths = write_diagnosis(
        Path(out), result.table, evidence, result.recommendation, ran.runs, context
    )
    wide = console if console.is_terminal else Console(width=max(console.width, 150))
    wide.print(terminal_table(result.table, cfg.dataset.name))
    for line in overall_lines(result.table, evidence):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print("[bold]recommendation[/] (rules and thresholds: docs/diagnose.md)")
    for line in result.recommendation.lines():
        bold = not line.startswith(("    ", "caveat"))  # the diagnoses; then why, and caveats
        console.print(
            line, style="bold" if bold else None, markup=False, highlight=False, soft_wrap=True
        )
    console.print(
        f"report: {result.paths['html']}\njson: {result.paths['json']}",
        highlight=False,
        soft_wrap=True,
    )
    return result
