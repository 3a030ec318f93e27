"""CREMA-D (Cao et al., 2014): 7,442 clips of 91 actors speaking with 6 emotions, audio + video.

Read from the user's copy (nothing is downloaded)::

    root/AudioWAV/<clip>.wav                 audio (always)
    root/VideoFlash/<clip>.flv               video="flv": frames decoded with PyAV
    root/Image-{fps:02d}-FPS/<clip>/*.jpg    video="frames": OGM-GE's extracted frames

CREMA-D has no official split. ``split="ogm"`` is OGM-GE's 6,698 / 744 lists (shipped in
``unipair/data/splits/crema_d/``, used unchanged by PMR, InfoReg, DI-MML and BalanceBenchmark);
they have no validation part, so validation is carved from train, stratified by class and seeded
by ``seed`` (never from test). Every actor is in both of its parts, so it is not
speaker-independent. ``split="speaker"`` is actor-disjoint: the 91 actors (a clip id's first 4
digits) of both lists are shuffled once by ``split_seed`` (independent of the run seed, so every
seed of a comparison is tested on the same actors) and ``test_fraction`` / ``val_fraction`` of
them, rounded, hold every clip of theirs in test / val. Class order is OGM-GE's (its
``stat.csv``, shipped as ``classes.csv``): NEU HAP SAD FEA DIS ANG.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unipair.data.benchmarks._av import (
    Clip,
    SplitList,
    audio_reader,
    build,
    check_folders,
    dataset_root,
    frame_folder,
    keep_classes,
    read_list,
    video_reader,
)
from unipair.data.dataset import MultimodalData
from unipair.data.manifest import OnError
from unipair.errors import ConfigError, DataFormatError

__all__ = ["load_crema_d"]

NAME = "crema_d"
CLIP_ID = re.compile(r"(\d{4})_[A-Z]{3}_([A-Z]{3})_[A-Z]{2}")
FRAMES_TEMPLATE = "Image-{fps:02d}-FPS"


def load_crema_d(
    root: str | Path | None = None,
    split: str = "ogm",
    audio: str = "fbank",
    frames: int = 1,
    video: str = "flv",
    fps: int | None = 1,
    size: int = 224,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    classes: Sequence[str] | None = None,
    lists: str | Path | None = None,
    on_error: OnError = "raise",
    augment: bool = True,
    prepared: str | None = None,
    audio_options: Mapping[str, Any] | None = None,
) -> MultimodalData:
    """CREMA-D's ``audio`` [1, F, T] and ``video`` [3, frames, size, size]; 6 classes.

    ``audio``: ``fbank`` [1, 1024, 128] (MLA, MMPareto), ``stft_ogm`` [1, 257, 188] (OGM-GE)
    or ``logmel`` [1, 128, 300]; ``audio_options`` override its feature options. ``frames``
    per clip, one per equal segment of the ``fps``-resampled clip (1 fps: OGM-GE's extraction;
    None: every frame of the flv), a random one when training, the middle one otherwise.
    ``split``: ``ogm`` or ``speaker`` (module doc; ``test_fraction`` and ``split_seed`` apply
    to ``speaker`` only). ``classes``: load only these classes (indices in OGM-GE's order).
    ``lists``: a folder with your own ``train.csv`` / ``test.csv`` in OGM-GE's format instead
    of the shipped ones. ``on_error: skip`` leaves out clips absent from the copy (recorded).
    """
    if split not in ("ogm", "speaker"):
        raise ConfigError(f"{NAME}: split must be 'ogm' or 'speaker', got {split!r}")
    if split == "ogm" and (test_fraction != 0.2 or split_seed != 0):
        raise ConfigError(f"{NAME}: test_fraction and split_seed apply to split='speaker' only")
    if video not in ("flv", "frames"):
        raise ConfigError(f"{NAME}: video must be 'flv' or 'frames', got {video!r}")
    base = dataset_root(root, NAME)
    folders = {"audio": base / "AudioWAV"}
    if video == "flv":
        folders["video"] = base / "VideoFlash"
    else:
        folders["frames"] = base / frame_folder(FRAMES_TEMPLATE, fps, NAME)
    layout = (
        "AudioWAV/<clip>.wav with VideoFlash/<clip>.flv"
        if video == "flv"
        else f"AudioWAV/<clip>.wav with {folders['frames'].name}/<clip>/*.jpg"
    )
    check_folders(folders, NAME, layout)
    known = [line for _, line in read_list(NAME, "classes.csv", None, "NEU").lines]
    chosen = keep_classes(known, classes, NAME)
    rows: list[tuple[str, str, str]] = []  # (clip, label, list split)
    digests = {}
    for part in ("train", "test"):
        listed = read_list(NAME, f"{part}.csv", lists, "1001_DFA_ANG_XX,ANG")
        digests[f"{part}.csv"] = listed.sha256
        for line, text in listed.lines:
            rows.append((*_row(listed, line, text, known), part))
    rows = [r for r in rows if r[1] in chosen]
    assigned = {}
    if split == "speaker":
        assigned = _speakers(rows, split_seed, val_fraction, test_fraction)
    visual = folders["video"] if video == "flv" else folders["frames"]
    clips = [
        Clip(
            id=clip,
            label=label,
            split=assigned.get(clip[:4], part),
            audio=str(folders["audio"] / f"{clip}.wav"),
            video=str(visual / (f"{clip}.flv" if video == "flv" else clip)),
        )
        for clip, label, part in rows
    ]
    modalities = {
        "audio": audio_reader(audio, audio_options, 3.0, NAME),
        "video": video_reader("file" if video == "flv" else "frames", frames, fps, size),
    }
    if split == "ogm":
        rule = (
            f"ogm: OGM-GE's train/test lists; val = {val_fraction} of train, stratified by "
            f"class (seed {seed}); every actor in every part"
        )
    else:
        n = {s: len({c.id[:4] for c in clips if c.split == s}) for s in ("train", "val", "test")}
        rule = (
            f"speaker: actor-disjoint, {n['train']}/{n['val']}/{n['test']} actors in "
            f"train/val/test, drawn by split_seed {split_seed} from both lists' clips"
        )
    return build(
        NAME,
        base,
        clips,
        modalities,
        chosen,
        layout=layout,
        seed=seed,
        val_fraction=val_fraction,
        on_error=on_error,
        augment=augment,
        prepared=prepared,
        info={
            "split_rule": rule,
            "lists": digests,
            "preprocessing": modalities,
        },
    )


def _row(listed: SplitList, line: int, text: str, known: Sequence[str]) -> tuple[str, str]:
    """``clip,EMO`` checked: a CREMA-D clip id whose emotion field is the label."""
    cells = [c.strip() for c in text.split(",")]
    if len(cells) != 2:
        raise listed.error(line, f"expected 'clip_id,EMO', got {text!r}")
    clip, label = cells
    m = CLIP_ID.fullmatch(clip)
    if m is None:
        raise listed.error(line, f"{clip!r} is not a CREMA-D clip id (e.g. 1001_DFA_ANG_XX)")
    if label not in known:
        raise listed.error(line, f"unknown label {label!r}; the classes are {list(known)}")
    if m[2] != label:
        raise listed.error(line, f"label {label!r} disagrees with the clip id {clip!r}")
    return clip, label


def _speakers(
    rows: Sequence[tuple[str, str, str]], split_seed: int, val_fraction: float, test: float
) -> dict[str, str]:
    """Actor -> train/val/test: the listed actors shuffled by ``split_seed``, the first
    ``test`` of them test, the next ``val_fraction`` val."""
    actors = sorted({clip[:4] for clip, _, _ in rows})
    n_test, n_val = round(test * len(actors)), round(val_fraction * len(actors))
    if min(n_test, n_val) < 1 or n_test + n_val >= len(actors):
        raise DataFormatError(
            f"{NAME}: {len(actors)} actors cannot give val_fraction {val_fraction} and "
            f"test_fraction {test} at least one actor each and leave some for training"
        )
    order = np.random.default_rng(split_seed).permutation(len(actors))
    parts = ["test"] * n_test + ["val"] * n_val + ["train"] * (len(actors) - n_test - n_val)
    return {actors[i]: part for i, part in zip(order.tolist(), parts, strict=True)}
