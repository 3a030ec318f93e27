"""Is a jointly trained multimodal model lazy, and what to try: the measurements and the rules
of ``unipair diagnose``.

Every number is read on the validation split; the runs are trained with the test split withheld
(``train.test: false``), because a diagnosis guides tuning and a choice made on test numbers
would spend the test split. The validation accuracies of a run are those of its best epoch,
chosen on validation, so they are slightly optimistic; every run is selected the same way.

Per modality m, ``joint`` against a ``unimodal`` run of m:

- probe gap: a linear probe on joint's frozen encoder of m minus the same probe on m trained
  alone (:func:`unipair.evaluation.probes.fit_probe_on_validation`): what m's encoder did not
  learn inside joint;
- own-head gap: joint's own per-modality accuracy (its slice of the fused head, a different
  measurement: what the fusion head makes of m) minus m's accuracy alone;
- leave-one-out drop and Shapley value of m for joint's fused validation accuracy;

and joint's fused accuracy against the best unimodal run. :func:`recommend` turns these into
methods to try through explicit rules; their thresholds (:class:`Thresholds`) are heuristics
and every finding names the numbers and thresholds that fired it (docs/diagnose.md).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unipair.io import write_json

__all__ = [
    "DEFAULT_EPOCHS",
    "Evidence",
    "Finding",
    "ModalityEvidence",
    "Recommendation",
    "Thresholds",
    "measure_run",
    "recommend",
    "summarize",
]

#: the short budget of a diagnosis when ``--epochs`` is not given
DEFAULT_EPOCHS = 10
#: exact Shapley values evaluate every subset: 2**8 validation passes at most
MAX_EXACT_SHAPLEY = 8
MEASURES_FILE = "diagnose_measures.json"
MEASURE_VERSION = 1

#: per-modality quantities, in the order of the table (fractions of validation rows)
QUANTITIES = (
    "probe_alone",
    "probe_joint",
    "probe_gap",
    "head_alone",
    "head_joint",
    "head_gap",
    "leave_one_out",
    "shapley",
)


# ---- worker side: what one finished run measures ----------------------------------------------
def measure_run(run_dir: Path) -> dict[str, Any]:
    """Validation probes of every modality the run encodes and, for a run on all modalities,
    leave-one-out and Shapley contributions to its fused validation accuracy; cached beside the
    run as ``diagnose_measures.json``. The test split is withheld: reading it is an error."""
    from unipair.evaluation.analysis import subset_value
    from unipair.evaluation.contributions import leave_one_out, shapley_values
    from unipair.evaluation.evaluate import LoadedRun
    from unipair.evaluation.probes import PROBE_C, fit_probe_on_validation, probe_features

    path = Path(run_dir) / MEASURES_FILE
    key = {"version": MEASURE_VERSION, "grid": list(PROBE_C), "split": "val"}
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached
    run = LoadedRun(run_dir)
    run.data.withhold_test()
    names = run.data.spec.names
    try:
        feats = {s: probe_features(run, s) for s in ("train", "val")}
    except NotImplementedError:
        feats = {"train": {}, "val": {}}
    probes = {m: fit_probe_on_validation(feats["train"][m], feats["val"][m]) for m in feats["val"]}
    contributions = None
    if run.method.modalities == names and len(names) > 1:
        value = functools.cache(subset_value(run, "val"))
        contributions = {
            "full": value(frozenset(names)),
            "prior": value(frozenset()),
            "leave_one_out": leave_one_out(names, value),
            "shapley": shapley_values(names, value) if len(names) <= MAX_EXACT_SHAPLEY else None,
        }
    result = {
        "key": key,
        "val_rows": len(run.data.val),
        "probes": probes,
        "contributions": contributions,
    }
    write_json(path, result)
    return result


# ---- parent side: numbers per seed, then mean ± std -------------------------------------------
def _stats(values: Sequence[float | None]) -> dict[str, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def summarize(runs: Sequence[dict[str, Any]], modalities: Sequence[str]) -> dict[str, Any]:
    """The diagnosis table from finished runs (labels ``joint`` and ``unimodal:<m>``, with
    ``measures``): per modality and overall, each quantity's mean, sample std and count over
    the seeds (a gap is taken within each seed, then averaged)."""
    joint = {r["seed"]: r for r in runs if r["label"] == "joint"}
    alone = {
        (r["label"].split(":", 1)[1], r["seed"]): r
        for r in runs
        if r["label"].startswith("unimodal:")
    }
    seeds = sorted(joint)
    per_mod: dict[str, dict[str, list[float | None]]] = {
        m: {q: [] for q in QUANTITIES} for m in modalities
    }
    overall: dict[str, list[float | None]] = {k: [] for k in ("fused", "prior", "synergy")}
    for seed in seeds:
        j = joint[seed]
        contrib = j["measures"].get("contributions") or {}
        for m in modalities:
            u = alone[(m, seed)]
            q = per_mod[m]
            q["probe_alone"].append(u["measures"]["probes"].get(m, {}).get("acc"))
            q["probe_joint"].append(j["measures"]["probes"].get(m, {}).get("acc"))
            q["probe_gap"].append(_minus(q["probe_joint"][-1], q["probe_alone"][-1]))
            q["head_alone"].append(u["summary"]["val"][f"acc/{m}"])
            q["head_joint"].append(j["summary"]["val"].get(f"acc/{m}"))
            q["head_gap"].append(_minus(q["head_joint"][-1], q["head_alone"][-1]))
            q["leave_one_out"].append(contrib.get("leave_one_out", {}).get(m))
            q["shapley"].append((contrib.get("shapley") or {}).get(m))
        fused = j["summary"]["val"]["acc"]
        loo = [per_mod[m]["leave_one_out"][-1] for m in modalities]
        overall["fused"].append(fused)
        overall["prior"].append(contrib.get("prior"))
        overall["synergy"].append(
            None if None in loo or "prior" not in contrib else sum(loo) - (fused - contrib["prior"])  # type: ignore[arg-type]
        )
    val_rows = [r["measures"].get("val_rows") or 0 for r in runs]
    return {
        "seeds": seeds,
        "val_rows": max(val_rows, default=0),
        "modalities": {m: {q: _stats(per_mod[m][q]) for q in QUANTITIES} for m in modalities},
        "overall": {k: _stats(v) for k, v in overall.items()},
    }


# ---- the rules ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Thresholds:
    """The rules' thresholds, in accuracy points: heuristics, named with every finding."""

    probe_gap: float = 5.0  # encoder under-trained: probe inside joint this far below alone
    head_gap: float = 10.0  # head ignores m: own-head accuracy this far below alone ...
    share_ratio: float = 0.5  # ... or Shapley share below this fraction of m's share alone
    fusion_margin: float = 1.0  # fusion hurts: fused this far below the best unimodal run
    interaction_gain: float = 3.0  # interaction: fused this far above the best unimodal ...
    synergy: float = 1.0  # ... and the LOO drops exceed the fused gain over chance by this


#: what each threshold decides (for the report)
THRESHOLD_NOTES = {
    "probe_gap": "rule 1, points: an encoder is under-trained when its probe gap is <= -this",
    "head_gap": "rule 2, points: the head under-uses m when its own-head gap is <= -this ...",
    "share_ratio": "rule 2, ratio: ... or its Shapley share is below this fraction of its share "
    "of the modalities' accuracy above chance alone",
    "fusion_margin": "rule 3, points: fusion hurts when fused < best unimodal - this",
    "interaction_gain": "rule 4, points: fused >= best unimodal + this ...",
    "synergy": "rule 4, points: ... and the leave-one-out drops exceed the fused gain over "
    "chance by this",
}


@dataclass(frozen=True)
class ModalityEvidence:
    """One modality's numbers (fractions of validation rows; means over seeds; NaN or None:
    not measured)."""

    probe_alone: float
    probe_joint: float
    head_alone: float
    head_joint: float
    leave_one_out: float | None = None
    shapley: float | None = None

    @property
    def probe_gap(self) -> float:
        return self.probe_joint - self.probe_alone

    @property
    def head_gap(self) -> float:
        return self.head_joint - self.head_alone


@dataclass(frozen=True)
class Evidence:
    """What the rules read: per-modality numbers, joint's fused accuracy, the chance level
    (majority-class rate), how many seeds and validation rows they come from."""

    modalities: dict[str, ModalityEvidence]
    fused: float
    prior: float
    seeds: list[int]
    val_rows: int

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> Evidence:
        def mean(stat: dict[str, float]) -> float | None:
            return stat["mean"] if stat["n"] else None

        mods = {
            m: ModalityEvidence(
                row["probe_alone"]["mean"],
                row["probe_joint"]["mean"],
                row["head_alone"]["mean"],
                row["head_joint"]["mean"],
                mean(row["leave_one_out"]),
                mean(row["shapley"]),
            )
            for m, row in table["modalities"].items()
        }
        overall = table["overall"]
        return cls(
            mods,
            overall["fused"]["mean"],
            overall["prior"]["mean"],
            list(table["seeds"]),
            int(table["val_rows"]),
        )

    @property
    def best_modality(self) -> str:
        return max(self.modalities, key=lambda m: self.modalities[m].head_alone)

    @property
    def best_alone(self) -> float:
        return self.modalities[self.best_modality].head_alone

    @property
    def loo_sum(self) -> float | None:
        loo = [e.leave_one_out for e in self.modalities.values()]
        return None if any(v is None for v in loo) else float(sum(loo))  # type: ignore[arg-type]

    @property
    def synergy(self) -> float | None:
        """Sum of the leave-one-out drops minus the fused gain over chance: 0 for additive
        modalities, negative for redundant ones, positive when they are needed together."""
        s = self.loo_sum
        return None if s is None or math.isnan(self.prior) else s - (self.fused - self.prior)

    def shapley_ratio(self, m: str) -> float | None:
        """m's Shapley share of the fused gain over its share of the modalities' strength
        alone (accuracy above chance): below 1, joint uses m less than m's strength implies."""
        phi = {k: e.shapley for k, e in self.modalities.items()}
        if any(v is None for v in phi.values()) or math.isnan(self.prior):
            return None
        strength = {k: max(e.head_alone - self.prior, 0.0) for k, e in self.modalities.items()}
        total_phi, total_s = sum(phi.values()), sum(strength.values())  # type: ignore[arg-type]
        if total_phi <= 0 or total_s <= 0 or strength[m] <= 0:
            return None
        return (phi[m] / total_phi) / (strength[m] / total_s)  # type: ignore[operator]


@dataclass(frozen=True)
class Finding:
    """One rule that fired: the diagnosis, the methods to try and why, and the evidence (the
    numbers and the threshold that fired it)."""

    rule: str
    diagnosis: str
    methods: tuple[str, ...]
    advice: str
    evidence: tuple[str, ...]
    modalities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    findings: list[Finding]
    caveats: list[str] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def methods(self) -> list[str]:
        """Every method recommended, in the order of the findings."""
        return list(dict.fromkeys(m for f in self.findings for m in f.methods))

    def lines(self) -> list[str]:
        """Per finding: the diagnosis and what to try, then its evidence indented; then the
        caveats."""
        out = []
        for f in self.findings:
            out.append(f"{f.diagnosis} -> {f.advice}")
            out += [f"    {e}" for e in f.evidence]
        out += [f"caveat: {c}" for c in self.caveats]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [asdict(f) for f in self.findings],
            "methods": self.methods,
            "caveats": list(self.caveats),
            "thresholds": asdict(self.thresholds),
        }


def _p(x: float) -> float:
    """A fraction in points, rounded so that a gap of exactly a threshold compares as equal."""
    return round(100 * x, 6)


def _pts(x: float) -> str:
    return f"{100 * x:.1f}"


def _gap(x: float) -> str:
    return f"{100 * x:+.1f}"


def recommend(evidence: Evidence, thresholds: Thresholds | None = None) -> Recommendation:
    """The rules, in order (thresholds in points; docs/diagnose.md):

    1. under-trained encoder: probe gap <= -probe_gap -> MLA or PgM (each encoder also trained
       on its own loss);
    2. the fusion head ignores m: probe gap above that, but own-head gap <= -head_gap or
       Shapley share ratio < share_ratio -> OGM-GE, or MLA's shared head;
    3. fusion hurts: fused < best unimodal - fusion_margin -> MLA or PgM; the unimodal model
       is the baseline to beat;
    4. interaction: fused >= best unimodal + interaction_gain and synergy >= synergy -> PgM's
       paired learner;
    5. balanced: none of 1-3 fired -> joint is fine, no balancing method needed.
    """
    t = thresholds or Thresholds()
    findings: list[Finding] = []
    mods = evidence.modalities
    measured = {m: e for m, e in mods.items() if math.isfinite(e.probe_gap)}
    lazy = [m for m, e in measured.items() if _p(e.probe_gap) <= -t.probe_gap]
    if lazy:
        findings.append(
            Finding(
                "under_trained_encoder",
                f"{', '.join(lazy)}: encoder under-trained inside joint",
                ("mla", "pgm"),
                "try mla (alternating unimodal training) or pgm (its uni learner)",
                tuple(
                    f"{m}: probe in joint {_pts(mods[m].probe_joint)}% vs alone "
                    f"{_pts(mods[m].probe_alone)}%, gap {_gap(mods[m].probe_gap)} "
                    f"<= -{t.probe_gap:g}"
                    for m in lazy
                ),
                tuple(lazy),
            )
        )
    ignored, why = [], []
    for m, e in measured.items():
        if m in lazy:
            continue
        reasons = []
        if math.isfinite(e.head_gap) and _p(e.head_gap) <= -t.head_gap:
            reasons.append(
                f"own head {_pts(e.head_joint)}% vs alone {_pts(e.head_alone)}%, gap "
                f"{_gap(e.head_gap)} <= -{t.head_gap:g}"
            )
        ratio = evidence.shapley_ratio(m)
        if ratio is not None and ratio < t.share_ratio:
            reasons.append(f"Shapley share ratio {ratio:.2f} < {t.share_ratio:g}")
        if reasons:
            ignored.append(m)
            why.append(
                f"{m}: probe gap {_gap(e.probe_gap)} > -{t.probe_gap:g}, but " + "; ".join(reasons)
            )
    if ignored:
        findings.append(
            Finding(
                "head_ignores_modality",
                f"{', '.join(ignored)}: encoder learned, but the fusion head under-uses it "
                "(imbalanced head)",
                ("ogm_ge", "mla"),
                "try ogm_ge (slows the dominant modality's gradient) or mla (shared head)",
                tuple(why),
                tuple(ignored),
            )
        )
    best, best_acc, fused = evidence.best_modality, evidence.best_alone, evidence.fused
    versus = f"joint fused {_pts(fused)}% vs unimodal {best} {_pts(best_acc)}%"
    hurt = _p(fused - best_acc) < -t.fusion_margin
    if hurt:
        findings.append(
            Finding(
                "fusion_hurts",
                f"joint is hurt by fusion: below {best} trained alone",
                ("mla", "pgm"),
                f"try mla or pgm; the unimodal {best} model is the baseline to beat",
                (f"{versus}, {_gap(fused - best_acc)} < -{t.fusion_margin:g}",),
            )
        )
    synergy = evidence.synergy
    if (
        synergy is not None
        and _p(fused - best_acc) >= t.interaction_gain
        and _p(synergy) >= t.synergy
    ):
        findings.append(
            Finding(
                "interaction",
                "interaction: joint gains from the modalities together, beyond each alone",
                ("pgm",),
                "try pgm (its paired learner models what only the modalities together carry)",
                (
                    f"{versus}, {_gap(fused - best_acc)} >= +{t.interaction_gain:g}",
                    f"leave-one-out drops sum to {_pts(evidence.loo_sum or 0.0)} points, "
                    f"{_gap(synergy)} beyond the fused gain over chance "
                    f"({_pts(fused - evidence.prior)}), >= +{t.synergy:g}",
                ),
            )
        )
    if not (lazy or ignored or hurt):
        gaps = [e.probe_gap for e in measured.values()]
        heads = [e.head_gap for e in measured.values() if math.isfinite(e.head_gap)]
        findings.insert(
            0,
            Finding(
                "balanced",
                "joint is fine: no sign of laziness",
                (),
                "no balancing method needed",
                (
                    f"lowest probe gap {_gap(min(gaps)) if gaps else 'n/a'} > "
                    f"-{t.probe_gap:g}; lowest own-head gap "
                    f"{_gap(min(heads)) if heads else 'n/a'} > -{t.head_gap:g}",
                    f"{versus}, {_gap(fused - best_acc)} >= -{t.fusion_margin:g}",
                ),
            ),
        )
    return Recommendation(findings, _caveats(evidence), t)


def _caveats(evidence: Evidence) -> list[str]:
    caveats = []
    n = evidence.val_rows
    if len(evidence.seeds) == 1:
        accs = [e.head_alone for e in evidence.modalities.values()]
        p = min(max(float(np.mean(accs)), 0.0), 1.0)
        se = 100 * math.sqrt(2 * p * (1 - p) / n) if n else float("nan")
        caveats.append(
            f"one seed ({evidence.seeds[0]}): every number is one run's; on {n} validation "
            f"rows a difference of two accuracies near {100 * p:.0f}% has a binomial standard "
            f"error of about {se:.1f} points, so a rule fired near its threshold may be noise; "
            "rerun with --seeds 0,1,2 before acting on it"
        )
    missing = [m for m, e in evidence.modalities.items() if not math.isfinite(e.probe_gap)]
    if missing:
        caveats.append(f"no probe for {', '.join(missing)}: rules 1 and 2 skip them")
    if any(e.shapley is None for e in evidence.modalities.values()):
        caveats.append(
            f"no Shapley values (computed exactly for at most {MAX_EXACT_SHAPLEY} modalities): "
            "the head rule reads the own-head gap only"
        )
    return caveats
