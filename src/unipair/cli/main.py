"""The ``unipair`` command.

Only typer, rich and the standard library are imported here; each command imports what it uses,
so parsing and ``--help`` never wait for torch or Lightning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from unipair.cli.errors import friendly
from unipair.errors import ConfigError, DataNotFoundError

app = typer.Typer(
    help="unipair: multimodal learning that trains every modality, not just the dominant one.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="List datasets, or show one.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")
console = Console()

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="override a config key: key.sub=value (repeatable)"),
]
PresetOpt = Annotated[
    str | None, typer.Option(help="a shipped recipe (same as -c preset:NAME; see docs/datasets.md)")
]
RootOpt = Annotated[
    str | None, typer.Option(help="your copy of the dataset (same as -o root=PATH)")
]


def _config_source(config: str | None, preset: str | None) -> str | None:
    if preset is None:
        return config
    if config is not None:
        raise ConfigError("give --config or --preset, not both (--preset NAME is -c preset:NAME)")
    return f"preset:{preset.removeprefix('preset:')}"


def _base_overrides(**flags: Any) -> dict[str, Any]:
    """CLI flags as dotted config keys (None means: not given)."""
    keys = {
        "dataset": "dataset.name",
        "method": "method.name",
        "epochs": "train.epochs",
        "seed": "train.seed",
        "batch_size": "train.batch_size",
        "devices": "fabric.devices",
        "accelerator": "fabric.accelerator",
        "strategy": "fabric.strategy",
        "precision": "fabric.precision",
        "out": "out",
        "name": "name",
        "test": "train.test",
        "root": "dataset.options.root",
    }
    return {keys[k]: v for k, v in flags.items() if v is not None}


def _devices(value: str | None) -> Any:
    if value is None:
        return None
    if value.isdigit() or (value.startswith("-") and value[1:].isdigit()):
        return int(value)
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return value


@app.command()
@friendly
def train(
    dataset: Annotated[str | None, typer.Option(help="dataset name or path to an .npz")] = None,
    method: Annotated[str | None, typer.Option(help="method name (see `unipair methods`)")] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="YAML config file, or preset:NAME")
    ] = None,
    preset: PresetOpt = None,
    root: RootOpt = None,
    set_: SetOpt = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs")] = None,
    seed: Annotated[int | None, typer.Option(help="training seed", min=0)] = None,
    batch_size: Annotated[int | None, typer.Option(help="global batch size")] = None,
    devices: Annotated[str | None, typer.Option(help="number of devices, or ids: 0,1")] = None,
    accelerator: Annotated[str | None, typer.Option(help="cpu, gpu, auto")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, ddp, ddp_spawn, ...")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="32-true, bf16-mixed, 16-mixed, or auto (fastest native one)"),
    ] = None,
    out: Annotated[str | None, typer.Option(help="parent folder for run directories")] = None,
    name: Annotated[str | None, typer.Option(help="run directory name")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue an interrupted run directory")
    ] = None,
    test: Annotated[
        bool,
        typer.Option(
            "--test/--no-test", help="read the test split once at the end (--no-test: tuning)"
        ),
    ] = True,
) -> None:
    """Train one method on one dataset; select on validation; test once at the end."""
    from unipair.engine.config import load_config
    from unipair.engine.trainer import train as run_train

    if resume is not None:
        base = _base_overrides(epochs=epochs)
        cfg = load_config(resume / "config.yaml", set_ or [], base) if base or set_ else None
        result = run_train(cfg or resume / "config.yaml", resume=resume)
    else:
        base = _base_overrides(
            dataset=dataset,
            method=method,
            epochs=epochs,
            seed=seed,
            batch_size=batch_size,
            devices=_devices(devices),
            accelerator=accelerator,
            strategy=strategy,
            precision=precision,
            out=out,
            name=name,
            test=None if test else False,
            root=root,
        )
        result = run_train(load_config(_config_source(config, preset), set_ or [], base))
    summary = result.summary
    if summary and summary["test"] is not None:
        _print_metrics("test metrics (best validation epoch)", summary["test"])
    elif summary:
        _print_metrics("validation metrics (best epoch)", summary["val"])
        console.print("test split not read (--no-test)", highlight=False)
    if summary:
        console.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True)


@app.command("eval")
@friendly
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    missing_rate: Annotated[
        float | None,
        typer.Option(
            help="hide modalities in this fraction of samples [0; 1 with --missing-modality]"
        ),
    ] = None,
    missing_modality: Annotated[str | None, typer.Option(help="hide only this modality")] = None,
    missing_seed: Annotated[int, typer.Option(help="seed of the missing masks")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Evaluate a finished run's best checkpoint, optionally with missing modalities."""
    from unipair.evaluation.evaluate import evaluate

    if missing_rate is None:  # a named modality without a rate is hidden everywhere
        missing_rate = 1.0 if missing_modality is not None else 0.0
    if not 0.0 <= missing_rate <= 1.0:
        raise ConfigError(f"--missing-rate must be within [0, 1], got {missing_rate}")
    metrics = evaluate(run_dir, split, missing_rate, missing_modality, missing_seed)
    if as_json:
        print(json.dumps(metrics, indent=2))
    else:
        what = f"{split} metrics"
        if missing_rate:
            what += f", {missing_modality or 'random modalities'} missing at rate {missing_rate}"
        _print_metrics(what, metrics)


def _csv_list(value: str | None, cast: Any, option: str) -> list[Any] | None:
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        kind = "integers" if cast is int else "values"
        raise ConfigError(f"{option}: expected comma-separated {kind}, got {value!r}") from None


@app.command()
@friendly
def compare(
    dataset: Annotated[str | None, typer.Option(help="dataset name or path to an .npz")] = None,
    methods: Annotated[
        str | None, typer.Option(help="comma-separated methods [joint,ogm_ge,mla,pgm]")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated seeds [0,1,2]")] = None,
    config: Annotated[
        str | None,
        typer.Option("--config", "-c", help="shared run config YAML (optional compare: section)"),
    ] = None,
    preset: PresetOpt = None,
    root: RootOpt = None,
    set_: SetOpt = None,
    jobs: Annotated[int | None, typer.Option(help="runs trained in parallel processes")] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per run [CPU cores // jobs]")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs for every run")] = None,
    out: Annotated[str, typer.Option(help="output folder (runs, results, report)")] = "compare",
    unimodal: Annotated[
        bool | None,
        typer.Option("--unimodal/--no-unimodal", help="train unimodal references (laziness gap)"),
    ] = None,
) -> None:
    """Train every (method, seed) identically, then report mean ± std and the imbalance figures.

    Finished runs in OUT are reused and interrupted ones resumed, so rerunning is cheap.
    """
    import shlex
    import sys

    from unipair.evaluation.compare_cli import run_compare_command

    result = run_compare_command(
        dataset=dataset,
        methods=_csv_list(methods, str, "--methods"),
        seeds=_csv_list(seeds, int, "--seeds"),
        config=_config_source(config, preset),
        overrides=set_ or [],
        root=root,
        jobs=jobs,
        threads=threads,
        epochs=epochs,
        out=out,
        unimodal=unimodal,
        command="unipair " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        console=console,
    )
    if result.failures:
        raise typer.Exit(1)


@app.command()
@friendly
def diagnose(
    dataset: Annotated[str, typer.Argument(help="dataset name, .npz, manifest or prepared folder")],
    epochs: Annotated[
        int | None, typer.Option(help="training epochs of every run [10]", min=1)
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="comma-separated seeds [0]")] = None,
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="shared run config YAML, or preset:NAME")
    ] = None,
    preset: PresetOpt = None,
    root: RootOpt = None,
    set_: SetOpt = None,
    jobs: Annotated[int, typer.Option(help="runs trained in parallel processes", min=1)] = 1,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per run [CPU cores // jobs]", min=1)
    ] = None,
    out: Annotated[str, typer.Option(help="output folder (runs, diagnosis)")] = "diagnose",
) -> None:
    """Is joint training lazy here? Train joint and one unimodal run per modality on a short
    budget, compare them on validation (probe gap, own-head gap, leave-one-out, Shapley, fused vs
    best unimodal) and recommend methods to try by explicit rules (docs/diagnose.md).

    The test split is never read. Finished runs in OUT are reused, so rerunning is cheap.
    """
    import shlex
    import sys

    from unipair.evaluation.diagnose_cli import run_diagnose_command

    result = run_diagnose_command(
        dataset=dataset,
        seeds=_csv_list(seeds, int, "--seeds"),
        config=_config_source(config, preset),
        overrides=set_ or [],
        epochs=epochs,
        jobs=jobs,
        threads=threads,
        out=out,
        root=root,
        command="unipair " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        console=console,
    )
    if result.failures:
        raise typer.Exit(1)


@app.command()
@friendly
def viz(
    run_dirs: Annotated[list[Path], typer.Argument(help="finished run directories")],
    out: Annotated[Path | None, typer.Option(help="folder for the PNGs [RUN_DIR/viz]")] = None,
) -> None:
    """Figures of runs from their method's report (pgm: t-SNE of uni/paired features, shares,
    uni heads, what each part carries; mla: fusion-weight distribution); with several PgM
    runs, also their uni/paired distributions side by side. Prints the PNG paths."""
    from unipair.evaluation.method_reports import method_report, runs_comparison

    for run_dir in run_dirs:
        for fig in method_report(run_dir, out / run_dir.name if out and len(run_dirs) > 1 else out):
            console.print(str(fig.path), highlight=False, soft_wrap=True)
    side_by_side = runs_comparison(run_dirs, out or run_dirs[0].parent / "viz")
    if side_by_side is not None:
        console.print(str(side_by_side.path), highlight=False, soft_wrap=True)


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}")
    console.print(table)


@app.command()
@friendly
def methods() -> None:
    """List methods with their hyperparameters and defaults."""
    from unipair.methods import describe_hparams, list_methods
    from unipair.methods.registry import METHODS

    for name in list_methods():
        cls = METHODS.get(name)
        table = Table(title=f"[bold]{name}[/]: {cls.description}", title_justify="left")
        table.add_column("hyperparameter")
        table.add_column("type")
        table.add_column("default")
        table.add_column("meaning")
        for key, (typ, default, doc) in describe_hparams(name).items():
            table.add_row(key, typ, repr(default), doc)
        if not describe_hparams(name):
            table.add_row("(none)", "", "", "")
        console.print(table)


def _describe(name: str, options: dict[str, Any]) -> dict[str, Any]:
    from unipair import datasets

    return datasets.create(name, **options).describe()


def _parse_options(items: list[str] | None) -> dict[str, Any]:
    if not items:  # the config module loads the engine (Lightning): only when options are given
        return {}
    from unipair.engine.config import yaml_load

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--option {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml_load(v)
    return out


@datasets_app.callback()
@friendly
def datasets_list(ctx: typer.Context) -> None:
    """Every dataset with its modalities, shapes, class count and split sizes."""
    if ctx.invoked_subcommand is not None:
        return
    from unipair.data.registry import DATASETS, dataset_options

    table = Table(title="datasets")
    for col in ("name", "modalities [shape]", "classes", "train/val/test", "about"):
        table.add_column(col)
    for name in DATASETS.names():
        about = DATASETS.get(name).description
        try:
            d = _describe(name, {})
        except DataNotFoundError as e:
            if "root" in dataset_options(name):  # a benchmark: say how to point at a copy
                hint = f"your copy: unipair datasets show {name} --root PATH"
            else:
                hint = "not loadable here: " + escape(str(e).split(";")[0][:100])
            table.add_row(name, "-", "-", "-", f"{about}\n[yellow]{hint}[/]")
            continue
        except (FileNotFoundError, ValueError, OSError) as e:
            reason = escape(str(e).split(";")[0][:100])
            table.add_row(name, "-", "-", "-", f"{about}\n[yellow]not loadable here: {reason}[/]")
            continue
        mods = "\n".join(f"{m} {s}" for m, s in d["modalities"].items())
        sizes = "/".join(str(d["splits"][s]) for s in ("train", "val", "test"))
        table.add_row(name, mods, str(d["num_classes"]), sizes, about)
    table.add_row(
        "<file>.npz",
        "one array per modality",
        "from 'label'",
        "given or drawn",
        "bring your own data: unipair datasets show path/to/file.npz",
    )
    table.add_row(
        "<manifest>.csv",
        "one column per modality",
        "from 'label'",
        "given, by group or drawn",
        "media files on disk: see docs/data.md (also .jsonl, and prepared folders)",
    )
    console.print(table)


def _progress(description: str):
    """A rich progress bar with counts and an ETA; returns (progress, callback)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        description, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), "eta",
        TimeRemainingColumn(), console=console, transient=True,
    )  # fmt: skip
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def _dataset_options(name: str, items: list[str] | None, root: str | None) -> dict[str, Any]:
    options = _parse_options(items)
    if root is not None:
        options["root"] = root
    return options


def _lenient(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Inspecting a copy should report what it lacks rather than stop at it: a loader that
    accepts ``on_error`` loads with ``skip`` unless the user chose otherwise."""
    from unipair.datasets import dataset_options

    if "on_error" in options or "on_error" not in dataset_options(name):
        return options
    return {**options, "on_error": "skip"}


def _problem_table(title: str, rows: list[tuple[Any, str, str]]) -> Table:
    report = Table(title=title)
    for col in ("line", "column", "problem"):
        report.add_column(col)
    for line, column, why in rows:
        report.add_row(str(line), column, escape(why))
    return report


@datasets_app.command("check")
@friendly
def datasets_check(
    name: Annotated[str, typer.Argument(help="a manifest (.csv, .jsonl), .npz or dataset name")],
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="dataset option key=value")
    ] = None,
    root: RootOpt = None,
    workers: Annotated[int, typer.Option(help="processes decoding files")] = 0,
) -> None:
    """Every row that cannot be read (missing, unreadable, decodes to nothing), before any
    training; exits with 1 when there is one."""
    from unipair.data.registry import is_manifest_path

    options = _dataset_options(name, option, root)
    if not is_manifest_path(name):
        # arrays are validated completely when loaded; a media benchmark lists absent items
        d = _describe(name, _lenient(name, options))
        skipped = d.get("skipped_rows") or []
        if not skipped:
            console.print(f"{name}: no problem found", highlight=False)
            return
        rows = [(r["line"], r["column"], r["reason"]) for r in skipped]
        listed = sum(d["splits"].values()) + len({r[0] for r in rows})
        title = f"{len({r[0] for r in rows})} of {listed} listed items have problems"
        console.print(_problem_table(title, rows))
        console.print(
            "training refuses these items; set on_error: skip in the dataset options to leave "
            "them out (they are recorded in the run summary)",
            highlight=False,
        )
        raise typer.Exit(1)
    from unipair.data.manifest import check_manifest

    modalities = options.pop("modalities", None)
    bar, update = _progress("decoding")
    with bar:
        table, problems = check_manifest(name, modalities, workers, update)
    if not problems:
        console.print(f"{name}: all {len(table)} rows readable", highlight=False)
        return
    title = f"{len({r for r, _, _ in problems})} of {len(table)} rows have problems"
    rows = [(table.lines[row], column, why) for row, column, why in problems]
    console.print(_problem_table(title, rows))
    console.print(
        "training refuses these rows; set on_error: skip in the dataset options to leave them "
        "out (they are recorded in the run summary)",
        highlight=False,
    )
    raise typer.Exit(1)


@app.command()
@friendly
def prepare(
    name: Annotated[str, typer.Argument(help="a manifest (.csv, .jsonl) or a media dataset")],
    out: Annotated[Path, typer.Option(help="folder for the prepared cache")],
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="dataset option key=value")
    ] = None,
    root: RootOpt = None,
    workers: Annotated[int, typer.Option(help="processes decoding files")] = 0,
) -> None:
    """Decode every deterministic part of a manifest once into memory-mapped arrays; train on
    the folder (--dataset OUT) with the random augmentations on top."""
    from unipair.data.prepared import prepare as run_prepare

    options = _dataset_options(name, option, root)
    bar, update = _progress("preparing")
    with bar:
        folder = run_prepare(name, out, options, workers=workers, progress=update)
    console.print(f"prepared: {folder} (train with --dataset {folder})", highlight=False)


@datasets_app.command("show")
@friendly
def datasets_show(
    name: Annotated[str, typer.Argument(help="dataset name or path to an .npz")],
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="dataset option key=value")
    ] = None,
    root: RootOpt = None,
) -> None:
    """One dataset in detail, including per-split class balance and, for your copy of a
    benchmark, how many listed items it lacks."""
    d = _describe(name, _lenient(name, _dataset_options(name, option, root)))
    table = Table(title=f"{d['name']}  (fingerprint {d['fingerprint']}, seed {d['seed']})")
    table.add_column("modality")
    table.add_column("shape")
    for m, s in d["modalities"].items():
        table.add_row(m, str(s))
    console.print(table)
    balance = Table(title="class balance per split")
    balance.add_column("split")
    balance.add_column("n", justify="right")
    for c in range(d["num_classes"]):
        balance.add_column(str(c), justify="right")
    for s in ("train", "val", "test"):
        balance.add_row(s, str(d["splits"][s]), *map(str, d["class_counts"][s]))
    console.print(balance)
    shown = ("modalities", "class_counts", "splits", "name", "fingerprint", "seed", "skipped_rows")
    for k, v in d.items():
        if k not in shown:
            console.print(f"[bold]{k}[/]: {v}", highlight=False)
    lines = sorted({r["line"] for r in d.get("skipped_rows") or []})
    if lines:
        first = ", ".join(map(str, lines[:5]))
        console.print(
            f"[bold]left out[/]: {len(lines)} listed items (lines {first}"
            f"{', ...' if len(lines) > 5 else ''}); `unipair datasets check` lists them all",
            highlight=False,
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
