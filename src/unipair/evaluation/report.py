"""Comparison outputs: results.csv, results.md, a self-contained report.html, a terminal table."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from unipair.evaluation.method_reports import Figure
from unipair.io import write_text

__all__ = ["results_rows", "terminal_table", "write_report"]


def _pm(stat: dict[str, float] | None, scale: float = 100.0, digits: int = 2) -> str:
    if not stat or stat["n"] == 0:
        return "–"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def _methods(table: dict[str, Any]) -> list[str]:
    return [k for k in table if not k.startswith("unimodal:")]


def _alone(table: dict[str, Any], m: str) -> dict[str, float] | None:
    return table.get(f"unimodal:{m}", {}).get("modality_acc", {}).get(m)


def _alone_probe(table: dict[str, Any], m: str) -> dict[str, float] | None:
    return table.get(f"unimodal:{m}", {}).get("probe_acc", {}).get(m)


def results_rows(table: dict[str, Any], modalities: Sequence[str]) -> list[dict[str, Any]]:
    """One flat row per method label (and unimodal reference) for results.csv."""
    rows = []
    for label, row in table.items():
        flat: dict[str, Any] = {"method": label, "seeds": " ".join(map(str, row["seeds"]))}
        for key in ("acc", "f1", "mean_modality_acc", "train_time_s"):
            if key in row:
                flat[f"{key}_mean"], flat[f"{key}_std"] = row[key]["mean"], row[key]["std"]
        for group in (
            "modality_acc",
            "laziness_gap",
            "probe_acc",
            "probe_gap",
            "leave_one_out",
            "shapley",
        ):
            for m in modalities:
                stat = row.get(group, {}).get(m)
                if stat:
                    flat[f"{group}/{m}_mean"], flat[f"{group}/{m}_std"] = stat["mean"], stat["std"]
        gap = row.get("modality_gap")
        if gap:
            flat["modality_gap_mean"] = gap["mean_distance"]["mean"]
            flat["modality_gap_std"] = gap["mean_distance"]["std"]
        rows.append(flat)
    return rows


def _markdown_tables(
    table: dict[str, Any], modalities: Sequence[str]
) -> list[tuple[str, list[str], list[list[str]]]]:
    methods = _methods(table)
    out = []
    head = ["method", "fused acc", "macro-F1", *modalities, "mean per-modality", "train s"]
    body = [
        [
            m,
            _pm(table[m]["acc"]),
            _pm(table[m]["f1"]),
            *[_pm(table[m]["modality_acc"].get(x)) for x in modalities],
            _pm(table[m].get("mean_modality_acc")),
            _pm(table[m]["train_time_s"], 1.0, 1),
        ]
        for m in methods
    ]
    if any(_alone(table, x) for x in modalities):
        body.append(
            [
                "trained alone (unimodal)",
                "–",
                "–",
                *[_pm(_alone(table, x)) for x in modalities],
                "–",
                "–",
            ]
        )
    out.append(
        (
            "Test accuracy (%), mean ± std over seeds; per-modality columns are each "
            "modality's own head (read differently by each method: not comparable across "
            "methods)",
            head,
            body,
        )
    )
    probed = [m for m in methods if "probe_acc" in table[m]]
    if probed:
        rows = [[m, *[_pm(table[m]["probe_acc"].get(x)) for x in modalities]] for m in probed]
        if any(_alone_probe(table, x) for x in modalities):
            rows.append(["trained alone (unimodal)", *[_pm(_alone_probe(table, x)) for x in
                                                      modalities]])  # fmt: skip
        out.append(
            (
                "Linear-probe accuracy (%) of each modality's frozen encoder features (probe "
                "fit on train, chosen on val, test read once): the same measurement for every "
                "method",
                ["method", *modalities],
                rows,
            )
        )
    if any("probe_gap" in table[m] for m in methods):
        out.append(
            (
                "Laziness gap from probes (points): probe accuracy inside the method minus "
                "the same probe on the modality trained alone",
                ["method", *modalities],
                [
                    [m, *[_pm(table[m]["probe_gap"].get(x)) for x in modalities]]
                    for m in methods
                    if "probe_gap" in table[m]
                ],
            )
        )
    if any("laziness_gap" in table[m] for m in methods) and any(
        _alone(table, x) for x in modalities
    ):
        out.append(
            (
                "Laziness gap from the methods' own heads (points): modality accuracy inside "
                "the method minus trained alone",
                ["method", *modalities],
                [
                    [m, *[_pm(table[m]["laziness_gap"].get(x)) for x in modalities]]
                    for m in methods
                    if "laziness_gap" in table[m]
                ],
            )
        )
    gapped = [m for m in methods if "modality_gap" in table[m]]
    if gapped:
        out.append(
            (
                "Modality gap on test: distance between the modalities' centroids of "
                "L2-normalised embeddings (0 = same mean direction, 2 = opposite), mean over "
                "pairs, and the mean cosine of one sample's embeddings across modalities",
                ["method", "embedding space", "centroid distance", "paired cosine"],
                [
                    [
                        m,
                        table[m]["modality_gap"]["space"],
                        _pm(table[m]["modality_gap"]["mean_distance"], 1.0, 3),
                        _pm(_mean_pair(table[m]["modality_gap"], "paired_cosine"), 1.0, 3),
                    ]
                    for m in gapped
                ],
            )
        )
    for kind, title in (
        ("leave_one_out", "Fused accuracy lost when the modality is missing at test time (points)"),
        ("shapley", "Shapley value of each modality for fused accuracy (points)"),
    ):
        have = [m for m in methods if table[m].get(kind)]
        if have:
            out.append(
                (
                    title,
                    ["method", *modalities],
                    [[m, *[_pm(table[m][kind].get(x)) for x in modalities]] for m in have],
                )
            )
    have = [m for m in methods if "curves" in table[m]]
    if have:
        rates = table[have[0]]["missing_rates"]
        picks = [i for i, r in enumerate(rates) if r in (0.0, 0.3, 0.5, 0.7, 0.9)]
        out.append(
            (
                "Fused accuracy (%) with random modalities missing from a fraction of test samples",
                ["method", *[f"p={rates[i]:.1f}" for i in picks]],
                [[m, *[_pm(table[m]["curves"]["random"][i]) for i in picks]] for m in have],
            )
        )
    return out


def _mean_pair(gap: dict[str, Any], key: str) -> dict[str, float] | None:
    """The mean over modality pairs of one per-pair statistic (its std: the mean of theirs)."""
    stats = [p[key] for p in gap["pairs"].values() if p[key]["n"]]
    if not stats:
        return None
    mean = {k: sum(s[k] for s in stats) / len(stats) for k in ("mean", "std")}
    return {**mean, "n": min(s["n"] for s in stats)}


def _md(title: str, head: list[str], body: list[list[str]]) -> str:
    lines = [
        f"**{title}**",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _html_table(title: str, head: list[str], body: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
    return (
        f"<figure class='table'><figcaption>{html.escape(title)}</figcaption>"
        f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></figure>"
    )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em} table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left} thead th{background:#f4f6f8}
figure{margin:1em 0} figure.table{overflow-x:auto} figcaption{font-weight:600;margin-bottom:.3em}
img{max-width:100%;border:1px solid #eee} code{background:#f4f6f8;padding:0 .3em}
"""

# A self-check the report runs in the browser: every figure decoded, no script error. The
# result lands in <body data-report-check>, which the headless-browser test reads.
_CHECK = """
<script>
window.__errors=[];window.addEventListener('error',e=>window.__errors.push(String(e.message)));
window.addEventListener('load',()=>{const imgs=[...document.images];
const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;
document.body.dataset.reportCheck=JSON.stringify({images:imgs.length,rendered:ok,
tables:document.querySelectorAll('table').length,errors:window.__errors});});
</script>
"""


def write_report(
    out: Path,
    table: dict[str, Any],
    modalities: Sequence[str],
    figures: Sequence[Figure],
    context: dict[str, Any],
) -> dict[str, Path]:
    """Write results.csv, results.md and report.html into ``out``."""
    rows = results_rows(table, modalities)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    paths = {"csv": write_text(out / "results.csv", buf.getvalue())}

    tables = _markdown_tables(table, modalities)
    command = context.get("command", "")
    md = [
        f"# unipair compare: {context.get('dataset', '')}",
        "",
        f"Command: `{command}`" if command else "",
        f"Seeds: {context.get('seeds')}; model selection on validation only; test read once.",
        "",
    ]
    md += [_md(*t) + "\n" for t in tables]
    paths["md"] = write_text(out / "results.md", "\n".join(md))

    parts = [
        f"<h1>unipair compare: {html.escape(str(context.get('dataset', '')))}</h1>",
        f"<p class='meta'>{html.escape(datetime.now().isoformat(timespec='seconds'))} · "
        f"seeds {html.escape(str(context.get('seeds')))} · validation-only model "
        "selection; the test split is read once per run</p>",
    ]
    if command:
        parts.append(f"<p class='meta'>command: <code>{html.escape(command)}</code></p>")
    parts.append("<h2>Results</h2>")
    parts += [_html_table(*t) for t in tables]
    parts.append("<h2>Figures</h2>")
    for fig in figures:
        data = base64.b64encode(fig.path.read_bytes()).decode()
        parts.append(
            f"<figure><img alt='{html.escape(fig.name)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
        )
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>unipair compare</title><style>{_CSS}</style>{_CHECK}</head>"
        f"<body>{''.join(parts)}</body></html>"
    )
    paths["html"] = write_text(out / "report.html", page)
    return paths


def terminal_table(table: dict[str, Any], modalities: Sequence[str]) -> Table:
    t = Table(
        title="test accuracy %, mean ± std over seeds (validation-selected); per-modality: "
        "each method's own head, then a linear probe on each frozen encoder"
    )
    for col in ("method", "fused", "macro-F1", *modalities, "train s"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for m in _methods(table):
        r = table[m]
        t.add_row(
            m,
            _pm(r["acc"]),
            _pm(r["f1"]),
            *[_pm(r["modality_acc"].get(x), digits=1) for x in modalities],
            _pm(r["train_time_s"], 1.0, 1),
        )
    if any(_alone(table, x) for x in modalities):
        t.add_row("alone", "–", "–", *[_pm(_alone(table, x), digits=1) for x in modalities], "–")
    probed = [m for m in _methods(table) if "probe_acc" in table[m]]
    if probed:
        t.add_section()
        t.add_row("[i]linear probe[/]", "", "", *[""] * len(modalities), "")
        for m in probed:
            probe = table[m]["probe_acc"]
            t.add_row(m, "", "", *[_pm(probe.get(x), digits=1) for x in modalities], "")
        if any(_alone_probe(table, x) for x in modalities):
            alone = [_pm(_alone_probe(table, x), digits=1) for x in modalities]
            t.add_row("alone", "", "", *alone, "")
    return t
