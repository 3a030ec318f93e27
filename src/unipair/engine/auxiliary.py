"""Auxiliary runs: finished runs a method depends on (UMT's teachers), loaded frozen.

``method.auxiliary_runs()`` names what it needs by key; ``method.aux`` in the config maps each
key to a run directory (``compare`` fills it in after training them). A run is accepted only if
it finished, trained the declared method with the declared hyperparameters, on the same data
(fingerprint) and with the same seed; anything else is refused with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from unipair.data.dataset import MultimodalData
from unipair.engine.checkpoint import read_checkpoint
from unipair.engine.config import RunConfig, load_config
from unipair.engine.run_dir import RunDir
from unipair.errors import ConfigError, RunDirError
from unipair.methods import AuxRun, Method
from unipair.methods import create as create_method

__all__ = ["load_auxiliary", "matches"]


def matches(spec: AuxRun, saved: RunConfig) -> bool:
    """Whether a run's config trained the method and hyperparameters ``spec`` declares."""
    if saved.method.name != spec.method:
        return False
    have = saved.method.hparams.model_dump(mode="json")
    return all(have.get(k) == v for k, v in spec.hparams.items())


def load_auxiliary(
    method: Method, cfg: RunConfig, data: MultimodalData, device: torch.device
) -> dict[str, dict[str, Any]]:
    """Attach the method's auxiliary runs, frozen, and return their provenance by key."""
    needs = method.auxiliary_runs()
    given = cfg.method.aux
    unknown = sorted(set(given) - set(needs))
    if unknown:
        raise ConfigError(
            f"method.aux names {unknown}, which method {cfg.method.name!r} does not use; "
            f"it uses {sorted(needs) or 'none'}"
        )
    if not needs:
        return {}
    missing = sorted(set(needs) - set(given))
    if missing:
        wanted = ", ".join(f"{k} ({needs[k].method})" for k in missing)
        raise RunDirError(
            f"method {cfg.method.name!r} needs finished auxiliary runs: {wanted}; give each "
            "with --set method.aux.<key>=RUN_DIR, or use `unipair compare`, which trains them"
        )
    models: dict[str, Method] = {}
    provenance: dict[str, dict[str, Any]] = {}
    for key, spec in needs.items():
        run = RunDir(given[key])
        saved, summary = _finished(run, key)
        _check(key, spec, run, saved, summary, cfg, data)
        aux = create_method(saved.method.name, data.spec, saved.model, saved.method.hparams)
        aux.load_state_dict(read_checkpoint(run.best)["method"])
        aux.requires_grad_(False)
        models[key] = aux.eval().to(device)
        provenance[key] = {
            "run_dir": str(run.path.resolve()),
            "method": saved.method.name,
            "best_epoch": summary.get("best_epoch"),
            "val": summary.get("val"),
        }
    method.attach_auxiliary(models)
    return provenance


def _finished(run: RunDir, key: str) -> tuple[RunConfig, Mapping[str, Any]]:
    if not run.config.is_file():
        raise RunDirError(f"auxiliary run {key!r}: {run.path} is not a run directory")
    if not run.is_finished() or not run.best.is_file():
        raise RunDirError(f"auxiliary run {key!r}: {run.path} has not finished")
    return load_config(run.config), json.loads(run.summary.read_text())


def _check(
    key: str,
    spec: AuxRun,
    run: RunDir,
    saved: RunConfig,
    summary: Mapping[str, Any],
    cfg: RunConfig,
    data: MultimodalData,
) -> None:
    where = f"auxiliary run {key!r} ({run.path})"
    if not matches(spec, saved):
        raise RunDirError(
            f"{where} trained {saved.method.name!r} with "
            f"{saved.method.hparams.model_dump(mode='json')}; expected {spec.method!r} with "
            f"{dict(spec.hparams)}"
        )
    if summary.get("dataset_fingerprint") != data.fingerprint:
        raise RunDirError(
            f"{where} was trained on other data (fingerprint "
            f"{summary.get('dataset_fingerprint')}, this run {data.fingerprint})"
        )
    if saved.train.seed != cfg.train.seed:
        raise RunDirError(f"{where} has seed {saved.train.seed}; this run has {cfg.train.seed}")
