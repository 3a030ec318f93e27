"""Glue between the ``compare`` command and the library: options, progress, outputs."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from rich.console import Console

from unipair.config_base import StrictModel
from unipair.engine.config import (
    ConfigError,
    MethodConfig,
    RunConfig,
    apply_overrides,
    format_errors,
    read_yaml,
    set_dotted,
)
from unipair.evaluation.analysis import DEFAULT_RATES
from unipair.evaluation.compare import (
    CompareResult,
    RunCallback,
    RunSpec,
    plan_runs,
    run_compare,
)
from unipair.evaluation.figures import write_figures
from unipair.evaluation.method_reports import Figure, get_report, has_report
from unipair.evaluation.report import terminal_table, write_report
from unipair.methods.registry import METHODS, validate_hparams

__all__ = ["CompareOptions", "progress_printer", "run_compare_command"]


class Variant(StrictModel):
    """A named configuration of a method, e.g. an ablation: ``{method: pgm, hparams: {...}}``.

    Its hyperparameters are laid over ``hparams[method]``, so a variant names only what differs.
    """

    method: str
    hparams: dict[str, Any] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(METHODS.unknown_message(v))
        return v


class CompareOptions(StrictModel):
    """The optional ``compare:`` section of a config file (command-line flags win)."""

    methods: list[str] = Field(default_factory=lambda: ["joint", "ogm_ge", "mla", "pgm"])
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(default_factory=lambda: [0, 1, 2])
    hparams: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method hyperparameters, e.g. {mla: {alpha: 1}}"
    )
    variants: dict[str, Variant] = Field(
        default_factory=dict, description="named method configurations to list in methods"
    )
    unimodal: bool = Field(True, description="train each modality alone as the reference")
    missing_rates: list[float] = Field(default_factory=lambda: list(DEFAULT_RATES))
    jobs: int = Field(1, ge=1, description="runs trained at once, each in its own process")
    threads: int | None = Field(
        None, ge=1, description="torch threads per run (default: CPU cores // jobs)"
    )

    @model_validator(mode="after")
    def _known(self) -> CompareOptions:
        if not self.methods:
            raise ValueError("name at least one method")
        for label in self.variants:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", label) or label in METHODS:
                raise ValueError(
                    f"variant name {label!r}: use letters, digits, '_', '.', '-', and not the "
                    "name of a method"
                )
        for m in self.methods:
            if m not in METHODS and m not in self.variants:
                raise ValueError(METHODS.unknown_message(m) + " (or a name under variants)")
        unknown = sorted(set(self.hparams) - set(METHODS.names()))
        if unknown:
            raise ValueError(f"hparams names unknown methods {unknown}")
        for name, hp in self.hparams.items():  # checked even for methods not run
            validate_hparams(name, hp)
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods repeat: {self.methods}")
        return self

    def runs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(label, method, hyperparameters) for every entry of ``methods``."""
        out = []
        for label in self.methods:
            if label in self.variants:
                v = self.variants[label]
                out.append((label, v.method, {**self.hparams.get(v.method, {}), **v.hparams}))
            else:
                out.append((label, label, dict(self.hparams.get(label, {}))))
        return out


def _load(config: str | None, overrides: list[str], base: dict[str, Any], flags: dict[str, Any]):
    data: dict[str, Any] = {}
    source = "compare config"
    if config is not None:
        data, source = read_yaml(config)
    section = dict(data.pop("compare", {}) or {})
    for key, value in base.items():
        set_dotted(data, key, value)
    apply_overrides(data, overrides)
    method = data.pop("method", None)
    try:
        options = CompareOptions.model_validate(
            {**section, **{k: v for k, v in flags.items() if v is not None}}
        )
    except ValidationError as e:
        raise ConfigError(format_errors(e, f"{source} (compare)")) from None
    if method is not None:
        options = _with_method_section(options, method, source)
    return RunConfig.from_mapping(data, source), options


def _with_method_section(options: CompareOptions, method: Any, source: str) -> CompareOptions:
    """A ``method:`` section (or ``--set method.hparams...``) applies to that method's runs:
    its hyperparameters go under ``compare.hparams``, which win where both set a key."""
    method = {"name": method} if isinstance(method, str) else dict(method)
    name = method.get("name", MethodConfig.model_fields["name"].default)
    ran = {m for _, m, _ in options.runs()}
    if name not in ran:
        raise ConfigError(
            f"{source}: the method section names {name!r}, which this comparison does not run "
            f"(methods: {', '.join(options.methods)}); give per-method hyperparameters under "
            "compare.hparams.<method>"
        )
    hparams = {**(method.get("hparams") or {}), **options.hparams.get(name, {})}
    return options.model_copy(update={"hparams": {**options.hparams, name: hparams}})


def progress_printer(console: Console, total: int, split: str) -> RunCallback:
    """``run_compare``'s callback: one line per finished run (its accuracy on ``split``,
    reused or its seconds) or failed run, numbered out of ``total``."""
    done = {"n": 0}

    def on_done(result: dict[str, Any] | None, spec: RunSpec, error: str | None) -> None:
        done["n"] += 1
        tag = f"[{done['n']}/{total}] {spec.label} seed {spec.seed}"
        if result is None:
            console.print(f"[red]✗ {tag}: {error}[/]", highlight=False)
            return
        how = "reused" if result["reused"] else f"{result['seconds']:.1f} s"
        acc = result["summary"][split]["acc"]
        console.print(f"✓ {tag}: {split} acc {acc:.4f} ({how})", highlight=False)

    return on_done


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
    root: str | None = None,
    command: str = "",
    console: Console | None = None,
) -> CompareResult:
    console = console or Console()
    flags = {"dataset.name": dataset, "train.epochs": epochs, "dataset.options.root": root}
    base = {k: v for k, v in flags.items() if v is not None}
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
    from unipair.engine.predict import load_data

    data = load_data(cfg)
    modalities, task, fingerprint = data.spec.names, data.spec, data.fingerprint
    del data  # each run loads its own: no extra copy while they train
    specs = plan_runs(cfg, opts.runs(), opts.seeds, out, opts.unimodal, task, fingerprint)
    console.print(
        f"[bold]compare[/] {cfg.dataset.name}: {len(specs)} runs "
        f"({', '.join(opts.methods)}{' + unimodal references' if opts.unimodal else ''}"
        f"; seeds {opts.seeds}; {opts.jobs} at a time) -> {out}",
        highlight=False,
    )
    on_done = progress_printer(console, len(specs), "test")

    result = run_compare(specs, out, opts.jobs, opts.missing_rates, on_done, opts.threads)
    if not result.runs:
        console.print("[red]no run finished[/]")
        return result
    figures = write_figures(result.table, result.runs, modalities, Path(out) / "figures")
    for label, method, _ in opts.runs():
        figures += _method_figures(result, label, method, Path(out) / "figures" / label)
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


def _method_figures(result: CompareResult, label: str, method: str, out: Path) -> list[Figure]:
    """The figures of the method's own report for its lowest-seed run, if it has a report."""
    runs = [r for r in result.runs if r["label"] == label]
    if not runs or not has_report(method):
        return []
    first = min(runs, key=lambda r: r["seed"])
    out.mkdir(parents=True, exist_ok=True)
    figures = get_report(method)(Path(first["run_dir"]), out)
    return [replace(f, caption=f"{label} (seed {first['seed']}): {f.caption}") for f in figures]
