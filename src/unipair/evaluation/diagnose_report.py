"""Diagnosis outputs: a terminal table, diagnosis.json and a self-contained diagnosis.html
(the comparison report's style), each file written atomically."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from unipair.evaluation.diagnose import THRESHOLD_NOTES, Evidence, Recommendation
from unipair.evaluation.report import _CHECK, _CSS, _html_table
from unipair.io import write_json, write_text

__all__ = ["SPLIT_NOTE", "overall_lines", "terminal_table", "write_diagnosis"]

SPLIT_NOTE = (
    "validation split (the runs never read the test split); accuracies are those of each "
    "run's best validation epoch"
)

#: (key, column header, is a gap) in the order of the per-modality table
COLUMNS = (
    ("probe_alone", "probe: alone", False),
    ("probe_joint", "probe: in joint", False),
    ("probe_gap", "probe gap", True),
    ("head_alone", "unimodal acc", False),
    ("head_joint", "joint own head", False),
    ("head_gap", "own-head gap", True),
    ("leave_one_out", "LOO drop", True),
    ("shapley", "Shapley", True),
)


def _fmt(stat: dict[str, float] | None, signed: bool = False, spread: bool = False) -> str:
    """Points of accuracy; ``± std`` over seeds when there are several."""
    if not stat or stat["n"] == 0:
        return "–"
    mean = f"{100 * stat['mean']:+.1f}" if signed else f"{100 * stat['mean']:.1f}"
    return f"{mean} ± {100 * stat['std']:.1f}" if spread else mean


def _seeds(table: dict[str, Any]) -> str:
    seeds = table["seeds"]
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean ± std over seeds {seeds}"


def _rows(table: dict[str, Any]) -> list[list[str]]:
    spread = len(table["seeds"]) > 1
    return [
        [m, *[_fmt(row[key], gap, spread) for key, _, gap in COLUMNS]]
        for m, row in table["modalities"].items()
    ]


def _overall(table: dict[str, Any], evidence: Evidence) -> list[list[str]]:
    spread = len(table["seeds"]) > 1
    o, best = table["overall"], evidence.best_modality
    return [
        ["joint fused accuracy", _fmt(o["fused"], spread=spread)],
        [f"best unimodal ({best})", _fmt(table["modalities"][best]["head_alone"], spread=spread)],
        ["fused minus best unimodal", f"{100 * (evidence.fused - evidence.best_alone):+.1f}"],
        ["chance (majority class)", _fmt(o["prior"], spread=spread)],
        ["synergy: LOO drops minus fused gain over chance", _fmt(o["synergy"], True, spread)],
    ]


def terminal_table(table: dict[str, Any], dataset: str) -> Table:
    t = Table(
        title=f"joint on {dataset}: validation accuracy % (test split never read), {_seeds(table)}"
    )
    for col in ("modality", *[h for _, h, _ in COLUMNS]):
        t.add_column(col, justify="left" if col == "modality" else "right")
    for row in _rows(table):
        t.add_row(*row)
    return t


def overall_lines(table: dict[str, Any], evidence: Evidence) -> list[str]:
    """Joint's fused accuracy against the best unimodal run, chance and synergy, one line."""
    o = dict(_overall(table, evidence))
    best = evidence.best_modality
    return [
        f"joint fused {o['joint fused accuracy']} vs best unimodal ({best}) "
        f"{o[f'best unimodal ({best})']}: {o['fused minus best unimodal']} points; chance "
        f"{o['chance (majority class)']}; synergy "
        f"{o['synergy: LOO drops minus fused gain over chance']}"
    ]


_HOW = (
    "probe: a linear probe (fit on train, its regularisation chosen on one half of validation "
    "and scored on the other) on the frozen encoder of the modality, inside joint and in the "
    "modality's unimodal run; probe gap = in joint minus alone. unimodal acc: the unimodal "
    "run's accuracy. joint own head: joint's per-modality accuracy read from the modality's "
    "slice of the fused head, a different measurement (what the fusion head makes of the "
    "modality). LOO drop: fused accuracy lost when the modality is missing; Shapley: its share "
    "of the fused accuracy above chance. Points of accuracy."
)


def write_diagnosis(
    out: Path,
    table: dict[str, Any],
    evidence: Evidence,
    recommendation: Recommendation,
    runs: Sequence[dict[str, Any]],
    context: dict[str, Any],
) -> dict[str, Path]:
    """Write diagnosis.json and diagnosis.html into ``out``."""
    best = evidence.best_modality
    created = datetime.now().isoformat(timespec="seconds")
    doc = {
        **context,
        "created": created,
        "split": "val",
        "test_read": False,
        "unit": "fraction of validation rows (gaps: differences of fractions)",
        "seeds": table["seeds"],
        "val_rows": table["val_rows"],
        "modalities": table["modalities"],
        "overall": table["overall"],
        "best_unimodal": {"modality": best, "acc": table["modalities"][best]["head_alone"]},
        **recommendation.to_dict(),
        "runs": [
            {k: r[k] for k in ("label", "seed", "run_dir", "reused", "seconds")} for r in runs
        ],
    }
    paths = {"json": write_json(out / "diagnosis.json", doc)}

    head = ["modality", *[h for _, h, _ in COLUMNS]]
    findings = "".join(
        f"<li><b>{html.escape(f.diagnosis)}</b> → {html.escape(f.advice)}<ul class='meta'>"
        + "".join(f"<li>{html.escape(e)}</li>" for e in f.evidence)
        + "</ul></li>"
        for f in recommendation.findings
    )
    caveats = "".join(f"<li>{html.escape(c)}</li>" for c in recommendation.caveats)
    thresholds = "".join(
        f"<li><code>{k} = {v:g}</code>: {html.escape(THRESHOLD_NOTES.get(k, ''))}</li>"
        for k, v in recommendation.to_dict()["thresholds"].items()
    )
    command = context.get("command", "")
    parts = [
        f"<h1>unipair diagnose: {html.escape(str(context.get('dataset', '')))}</h1>",
        f"<p class='meta'>{html.escape(created)} · {html.escape(_seeds(table))} · "
        f"{context.get('epochs')} epochs · accuracy on the {html.escape(SPLIT_NOTE)} "
        f"({table['val_rows']} rows)</p>",
    ]
    if command:
        parts.append(f"<p class='meta'>command: <code>{html.escape(command)}</code></p>")
    parts += [
        "<h2>Recommendation</h2>",
        f"<ul>{findings}</ul>",
        f"<p><b>Caveats</b></p><ul>{caveats}</ul>" if caveats else "",
        "<h2>Measurements</h2>",
        _html_table("Per modality, accuracy points", head, _rows(table)),
        _html_table("Joint overall", ["quantity", "points"], _overall(table, evidence)),
        f"<p class='meta'>{html.escape(_HOW)}</p>",
        "<h2>Rules</h2><p>Thresholds are heuristics (docs/diagnose.md); rule 5, joint is "
        f"fine, fires when none of rules 1-3 does.</p><ul>{thresholds}</ul>",
        _html_table(
            "Runs",
            ["run", "seed", "directory", "reused"],
            [
                [r["label"], str(r["seed"]), str(r["run_dir"]), "yes" if r["reused"] else "no"]
                for r in runs
            ],
        ),
    ]
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>unipair diagnose</title><style>{_CSS}</style>{_CHECK}</head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    paths["html"] = write_text(out / "diagnosis.html", page)
    return paths
