"""Frozen-feature caching (``train.feature_cache``): a frozen encoder's output, computed once.

An encoder frozen for the whole run (``freeze: all``, or ``until_epoch:N`` with N >= the
epochs) whose modality's training input is not random gives the same features every epoch.
What is random, the data layer says (``MultimodalDataset.augmentation``): a manifest's image and
video readers when ``augment: true``; never arrays in memory, audio features, token ids or
feature files. With ``feature_cache: auto`` the trainer then computes the encoder's
``frozen_features`` once per split (eval mode, the run's device and precision, only rows where
the modality is present), replaces the modality's input by them
(:class:`~unipair.data.dataset.FeatureInputs`) and sets the encoder's ``reads_features``, so
only its projection runs. Methods see the same encoders and batches as before. The module stays
whole: checkpoints hold the backbone's weights and ``unipair eval`` reads raw inputs.

Files: ``<dir>/<modality>-<split>-<key>.pt``, ``dir`` = ``train.feature_cache_dir`` (default
``<out>/.feature_cache``, shared by the runs under ``out``: a comparison's seeds). ``key`` hashes
all the features depend on: the frozen weights and BatchNorm statistics as loaded (so the
weights file's sha256, also recorded), the encoder's name, options and input shape, the data
fingerprint and the split's inputs (arrays' bytes; a manifest's reader options, cells and each
file's size and modification time), device and precision. Anything else gives another file;
stale files are never read, and never deleted (delete the folder to reclaim the space). Files
are written atomically by rank 0; other ranks read them after a barrier (or compute their own
where they cannot see rank 0's folder).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import Tensor, nn

from unipair.data.dataset import FeatureInputs, MultimodalData, MultimodalDataset, WithheldSplit
from unipair.engine.checkpoint import state_checksum
from unipair.engine.config import RunConfig
from unipair.engine.predict import make_loader, on_device
from unipair.engine.samplers import ShardBatchSampler
from unipair.io import atomic_path
from unipair.methods import Method
from unipair.models.pretrained import FreezeSpec, frozen_state

__all__ = ["cache_dir", "cache_features", "plan_feature_cache"]

#: bumped when what a file holds, or how it is computed, changes
FORMAT = 1


def cache_dir(cfg: RunConfig) -> Path:
    return Path(cfg.train.feature_cache_dir or Path(cfg.out) / ".feature_cache")


def plan_feature_cache(
    method: Method, cfg: RunConfig, data: MultimodalData
) -> dict[str, str | None]:
    """For each modality whose encoder has a ``freeze`` other than ``none``: None when its
    features are cached, else why not (recorded in summary.json and printed)."""
    plan: dict[str, str | None] = {}
    for m, encoder in method.modality_encoders().items():
        spec = getattr(encoder, "freeze", None)
        if isinstance(spec, FreezeSpec) and spec.mode != "none":
            plan[m] = _why_not(m, encoder, spec, method, cfg, data)
    return plan


def _why_not(
    m: str, encoder: nn.Module, spec: FreezeSpec, method: Method, cfg: RunConfig, data: Any
) -> str | None:
    if cfg.train.feature_cache == "off":
        return "train.feature_cache: off"
    if not callable(getattr(encoder, "frozen_features", None)):
        return f"{type(encoder).__name__} does not split off its frozen part (frozen_features)"
    epoch = spec.trains_in(cfg.train.epochs)
    if epoch is not None:
        trained = "part of the encoder" if spec.mode == "stem" else "the encoder"
        return f"freeze: {spec} trains {trained} from epoch {epoch}"
    if method.auxiliary:
        return "the method's auxiliary runs read the raw inputs"
    why = data.train.augmentation().get(m)
    if why:
        return f"its training inputs are random: {why}"
    return None


def cache_features(
    method: Method, cfg: RunConfig, data: MultimodalData, fabric: Fabric
) -> dict[str, dict[str, Any]]:
    """Apply :func:`plan_feature_cache`: the cached modalities' inputs become their features in
    every split of ``data`` (replaced in place) and their encoders read them. Returns what
    summary.json records per modality. Draws nothing from the global random generators."""
    plan = plan_feature_cache(method, cfg, data)
    info: dict[str, dict[str, Any]] = {
        m: {"cached": False, "reason": why} for m, why in plan.items() if why is not None
    }
    splits = {s: ds for s in ("train", "val", "test") if not isinstance(ds := data.split(s),
              WithheldSplit)}  # fmt: skip
    encoders = method.modality_encoders()
    cached: dict[str, dict[str, tuple[Tensor, Tensor, Tensor]]] = {s: {} for s in splits}
    folder = cache_dir(cfg)
    for m in [m for m, why in plan.items() if why is None]:
        encoder = encoders[m]
        t0 = time.perf_counter()
        base = _key(m, encoder, cfg, data, fabric)
        keys = {
            s: {**base, "split": s, "rows": len(ds), "inputs": ds.input_fingerprint(m)}
            for s, ds in splits.items()
        }
        unknown = [s for s, k in keys.items() if k["inputs"] is None]
        if unknown:
            kind = type(splits[unknown[0]]).__name__
            why = f"the {unknown[0]} split ({kind}) cannot fingerprint its inputs"
            info[m] = {"cached": False, "reason": why}
            continue
        files = {}
        for s, ds in splits.items():
            path = folder / f"{m}-{s}-{_digest(keys[s])}.pt"
            compute = _computer(encoder, ds, m, fabric, cfg)
            cached[s][m], computed = _features(path, keys[s], compute, fabric)
            files[s] = {"path": str(path), "computed": computed}
        encoder.reads_features = True
        info[m] = {
            "cached": True,
            "files": files,
            "seconds": round(time.perf_counter() - t0, 3),
            "weights_sha256": keys["train"]["weights"],
        }
    for s, per_modality in cached.items():
        if per_modality:
            index = next(iter(per_modality.values()))[2]
            features = {m: f for m, (f, _, _) in per_modality.items()}
            present = {m: p for m, (_, p, _) in per_modality.items()}
            setattr(data, s, FeatureInputs(splits[s], features, present, index))
    return info


def _key(
    m: str, encoder: nn.Module, cfg: RunConfig, data: MultimodalData, fabric: Fabric
) -> dict[str, Any]:
    """What a modality's features depend on in every split (see the module's docstring); each
    split adds its name, size and input fingerprint."""
    entry = cfg.model.encoders.get(m, cfg.model.encoders.get("*"))
    options = {k: v for k, v in (entry.options if entry else {}).items() if k != "freeze"}
    info = getattr(encoder, "weights_info", None) or {}
    return {
        "format": FORMAT,
        "modality": m,
        "data": data.fingerprint,
        "encoder": {
            "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
            "name": entry.name if entry else None,
            "options": options,
            "input_shape": list(data.spec[m].shape),
        },
        "frozen_state": state_checksum(frozen_state(encoder)),
        "weights": info.get("sha256"),
        "precision": str(fabric.strategy.precision.precision),
        "device": fabric.device.type,
    }


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


Features = tuple[Tensor, Tensor, Tensor]  # features [N, ...], present bool [N], index [N]


def _features(
    path: Path, key: dict[str, Any], compute: Callable[[], Features], fabric: Fabric
) -> tuple[Features, bool]:
    """The split's features from ``path``, or computed (by rank 0) and written there."""
    got = _read(path, key) if fabric.is_global_zero else None
    computed = bool(fabric.broadcast(got is None, src=0))
    if computed:
        if fabric.is_global_zero:
            got = compute()
            features, present, index = got
            blob = {"key": json.dumps(key, sort_keys=True, default=str), "features": features,
                    "present": present, "index": index}  # fmt: skip
            with atomic_path(path) as tmp:
                torch.save(blob, tmp)
        fabric.barrier()
    if got is None:  # another rank: what rank 0 wrote, unless its folder is not visible here
        got = _read(path, key) or compute()
    return got, computed


def _read(path: Path, key: dict[str, Any]) -> Features | None:
    """The file's features if it holds exactly ``key``'s; None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob["key"] != json.dumps(key, sort_keys=True, default=str):
            return None
        features, present, index = blob["features"], blob["present"], blob["index"]
    except Exception:  # truncated or foreign: computed again and replaced
        return None
    n = key["rows"]
    if not (len(features) == len(present) == len(index) == n):
        return None
    return features, present.bool(), index.long()


def _computer(
    encoder: nn.Module, ds: MultimodalDataset, m: str, fabric: Fabric, cfg: RunConfig
) -> Callable[[], Features]:
    def compute() -> Features:
        return _compute(encoder, ds, m, fabric, cfg.train.eval_batch_size, cfg.train.num_workers)

    return compute


@torch.no_grad()
def _compute(
    encoder: nn.Module, ds: MultimodalDataset, m: str, fabric: Fabric, batch_size: int, workers: int
) -> Features:
    """``encoder.frozen_features`` of every present row of ``ds`` (evaluation view), in eval
    mode and the run's precision; zeros where the modality is missing."""
    view = ds.eval_view()
    others = [k for k in view.present if k != m]
    view = view.without(others) if others else view
    loader = make_loader(view, ShardBatchSampler(len(view), batch_size), workers)
    was_training = encoder.training
    encoder.eval()
    parts: list[tuple[Tensor, Tensor | None]] = []
    presents, indices = [], []
    try:
        with fabric.autocast():
            for batch in loader:
                batch = on_device(batch, fabric)
                x, present, valid = batch.inputs[m], batch.present[m], batch.valid.get(m)
                rows = torch.nonzero(present).squeeze(1)
                z = None
                if rows.numel():
                    z = encoder.frozen_features(x[rows], None if valid is None else valid[rows])
                parts.append((rows.cpu(), None if z is None else z.cpu()))
                presents.append(present.cpu())
                indices.append(batch.index.cpu())
    finally:
        encoder.train(was_training)
    done = [z for _, z in parts if z is not None]
    shape, dtype = (done[0].shape[1:], done[0].dtype) if done else ((0,), torch.float32)
    chunks = []
    for (rows, z), present in zip(parts, presents, strict=True):
        chunk = torch.zeros((len(present), *shape), dtype=dtype)
        if z is not None:
            chunk[rows] = z
        chunks.append(chunk)
    return torch.cat(chunks), torch.cat(presents), torch.cat(indices)
