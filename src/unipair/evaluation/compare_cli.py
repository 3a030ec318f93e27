"""Glue between the ``compare`` command and the library: options, progress, outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from rich.console import Console

from unipair.config_base import StrictModel
from unipair.engine.config import (
    ConfigError,
    RunConfig,
    _format,
    _set_dotted,
    apply_overrides,
    read_yaml,
)
from unipair.evaluation.analysis import DEFAULT_RATES
from unipair.evaluation.compare import CompareResult, RunSpec, plan_runs, run_compare
from unipair.evaluation.figures import write_figures
from unipair.evaluation.report import terminal_table, write_report
from unipair.methods.registry import METHODS

__all__ = ["CompareOptions", "run_compare_command"]


class CompareOptions(StrictModel):
    """The optional ``compare:`` section of a config file (command-line flags win)."""

    methods: list[str] = Field(default_factory=lambda: ["joint", "ogm_ge", "mla", "pgm"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    hparams: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method hyperparameters, e.g. {mla: {alpha: 1}}"
    )
    unimodal: bool = Field(True, description="train each modality alone as the reference")
    missing_rates: list[float] = Field(default_factory=lambda: list(DEFAULT_RATES))
    jobs: int = Field(1, ge=1, description="runs trained at once, each in its own process")
    threads: int | None = Field(
        None, ge=1, description="torch threads per run (default: CPU cores // jobs)"
    )

    @field_validator("methods")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for m in v:
            if m not in METHODS:
                raise ValueError(METHODS.unknown_message(m))
        if not v:
            raise ValueError("name at least one method")
        return v


def _load(config: str | None, overrides: list[str], base: dict[str, Any], flags: dict[str, Any]):
    data: dict[str, Any] = {}
    source = "compare config"
    if config is not None:
        data, source = read_yaml(config)
    section = data.pop("compare", {}) or {}
    for key, value in base.items():
        _set_dotted(data, key, value)
    apply_overrides(data, overrides)
    try:
        options = CompareOptions.model_validate(
            {**section, **{k: v for k, v in flags.items() if v is not None}}
        )
    except ValidationError as e:
        raise ConfigError(_format(e, f"{source} (compare)")) from None
    return RunConfig.from_mapping(data, source), options


def run_compare_command(
    *,
    dataset: str | None,
    methods: list[str] | None,
    seeds: list[int] | None,
    config: str | None,
    overrides: list[str],
    jobs: int | None,
    epochs: int | None,
    threads: int | None = None,
    out: str,
    unimodal: bool | None,
    command: str = "",
    console: Console | None = None,
) -> CompareResult:
    console = console or Console()
    base = {
        k: v for k, v in {"dataset.name": dataset, "train.epochs": epochs}.items() if v is not None
    }
    cfg, opts = _load(
        config,
        overrides,
        base,
        {
            "methods": methods,
            "seeds": seeds,
            "jobs": jobs,
            "unimodal": unimodal,
            "threads": threads,
        },
    )
    # the dataset is loaded once here: it validates early and names the modalities
    from unipair.engine.trainer import load_data

    data = load_data(cfg)
    modalities = data.spec.names
    specs = plan_runs(cfg, opts.methods, opts.seeds, out, opts.hparams, opts.unimodal, modalities)
    console.print(
        f"[bold]compare[/] {cfg.dataset.name}: {len(specs)} runs "
        f"({', '.join(opts.methods)}{' + unimodal references' if opts.unimodal else ''}"
        f"; seeds {opts.seeds}; {opts.jobs} at a time) -> {out}",
        highlight=False,
    )
    done = {"n": 0}

    def on_done(result: dict[str, Any] | None, spec: RunSpec, error: str | None) -> None:
        done["n"] += 1
        tag = f"[{done['n']}/{len(specs)}] {spec.label} seed {spec.seed}"
        if result is None:
            console.print(f"[red]✗ {tag}: {error}[/]", highlight=False)
            return
        how = "reused" if result["reused"] else f"{result['seconds']:.1f} s"
        console.print(
            f"✓ {tag}: test acc {result['summary']['test']['acc']:.4f} ({how})", highlight=False
        )

    result = run_compare(specs, out, opts.jobs, opts.missing_rates, on_done, opts.threads)
    if not result.runs:
        console.print("[red]no run finished[/]")
        return result
    figures = write_figures(result.table, result.runs, modalities, Path(out) / "figures")
    if "pgm" in opts.methods:
        figures.update(_pgm_figures(result, Path(out) / "figures"))
    paths = write_report(
        Path(out),
        result.table,
        modalities,
        figures,
        {"dataset": cfg.dataset.name, "seeds": opts.seeds, "command": command},
    )
    wide = console if console.is_terminal else Console(width=max(console.width, 150))
    wide.print(terminal_table(result.table, modalities))
    for label, seed, error in result.failures:
        console.print(f"[red]failed: {label} seed {seed}: {error}[/]", highlight=False)
    console.print(
        f"report: {paths['html']}\nresults: {paths['md']}, {paths['csv']}",
        highlight=False,
        soft_wrap=True,
    )
    return result


def _pgm_figures(result: CompareResult, out: Path) -> dict[str, Path]:
    """The PgM partition figures of the first PgM run (its lowest seed)."""
    runs = [r for r in result.runs if r["label"] == "pgm"]
    if not runs:
        return {}
    from unipair.evaluation.pgm_viz import visualize_pgm

    paths = visualize_pgm(runs[0]["run_dir"], out / "pgm")
    return {Path(p).stem: Path(p) for p in paths}
