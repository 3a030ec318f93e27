"""What the audio-visual benchmark loaders (CREMA-D, Kinetics-Sounds, AVE) share: the split
lists shipped in the package, the dataset root, the reader options of each audio
representation, the check for clips absent from the user's copy, and the manifest table that
:func:`unipair.data.manifest.manifest_data` turns into a dataset.

The table holds one row per listed clip, with absolute paths (so messages name real files) and
the published split in its ``split`` column; its rows are numbered 1..N in list order (the
train list first), which is what "line" means in its messages and in ``info["skipped_rows"]``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from unipair.data.dataset import MultimodalData
from unipair.data.manifest import ManifestTable, OnError, manifest_data
from unipair.data.readers import media_file
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = [
    "AUDIO",
    "VIDEO",
    "Clip",
    "SplitList",
    "audio_reader",
    "build",
    "check_folders",
    "dataset_root",
    "frame_folder",
    "keep_classes",
    "layout_folders",
    "read_list",
    "video_reader",
]

#: audio representations: the ``audio`` reader's ``features`` (see docs/datasets.md)
AUDIO = ("fbank", "stft_ogm", "logmel")
#: where the frames come from: the video file (decoded with PyAV) or extracted frame folders
VIDEO = ("file", "frames")
EXAMPLES = 3


@dataclass(frozen=True)
class Clip:
    """One listed item: its id, class name, published split and the cells of its files."""

    id: str
    label: str
    split: str
    audio: str
    video: str


@dataclass(frozen=True)
class SplitList:
    """A split list as read: its non-empty lines (number, text) and its sha256."""

    source: str
    lines: list[tuple[int, str]]
    sha256: str

    def error(self, line: int, why: str) -> DataFormatError:
        return DataFormatError(f"split list {self.source} line {line}: {why}")


def dataset_root(root: str | Path | None, name: str) -> Path:
    """The user's copy: ``root``, else ``$UNIPAIR_<NAME>_ROOT``; absolute, so that the table's
    cells are."""
    env = f"UNIPAIR_{name.upper()}_ROOT"
    if root is None or str(root) == "":
        value = os.environ.get(env)
        if not value:
            raise DataNotFoundError(
                f"{name}: no dataset folder given; set root= (dataset.options.root, or "
                f"--set dataset.options.root=DIR) or ${env} to your copy (docs/datasets.md)"
            )
        root = value
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataNotFoundError(f"{name}: dataset folder {path} does not exist")
    return path


def read_list(name: str, file: str, lists: str | Path | None, example: str) -> SplitList:
    """A split list: the one shipped in ``unipair/data/splits/<name>/``, or the user's file of
    the same name in the folder ``lists``. Missing, undecodable or empty lists are errors
    naming the file."""
    ref: Any = (
        resources.files("unipair.data") / "splits" / name / file
        if lists is None
        else Path(lists).expanduser() / file
    )
    if not ref.is_file():
        raise DataNotFoundError(f"{name}: split list {ref} does not exist")
    data = ref.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"split list {ref}: not UTF-8 text ({e})") from None
    lines = [(i, s.strip()) for i, s in enumerate(text.splitlines(), 1) if s.strip()]
    if not lines:
        raise DataFormatError(f"split list {ref} is empty; expected rows like {example!r}")
    return SplitList(str(ref), lines, hashlib.sha256(data).hexdigest())


def keep_classes(known: Sequence[str], wanted: Sequence[str | int] | None, name: str) -> list[str]:
    """The classes to load, in the dataset's own order: all, or the ``classes`` option's (a
    subset benchmark, or a partial copy holding a few classes); indices follow this order."""
    if wanted is None:
        return list(known)
    if isinstance(wanted, str | int):
        wanted = [wanted]
    chosen = {str(c) for c in wanted}
    unknown = sorted(chosen - set(known))
    if unknown:
        raise ConfigError(f"{name}: unknown class(es) {unknown}; the classes are {list(known)}")
    if len(chosen) < 2:
        raise ConfigError(f"{name}: classes must name at least two classes, got {list(wanted)}")
    return [c for c in known if c in chosen]


def audio_reader(
    audio: str, options: Mapping[str, Any] | None, seconds: float, name: str
) -> dict[str, Any]:
    """The ``audio`` reader options of a representation; ``options`` override its feature
    options (e.g. ``{"normalize": "ks"}`` for fbank, ``{"seconds": 10}`` for stft_ogm).

    - ``fbank``: Kaldi fbank, 16 kHz, 128 bins, 1,024 frames, unnormalised (MLA) -> [1, 1024, 128]
    - ``stft_ogm``: OGM-GE's log-STFT, 22.05 kHz tiled to 3 s -> [1, 257, 188]
    - ``logmel``: unipair's log-mel, 16 kHz, 128 bins, 10 ms hop, ``seconds`` long (centre
      crop or zero padding) -> [1, 128, 100 * seconds]
    """
    defaults: dict[str, dict[str, Any]] = {
        "fbank": {"frames": 1024},
        "stft_ogm": {},
        "logmel": {
            "sample_rate": 16000,
            "n_fft": 512,
            "hop_length": 160,
            "n_mels": 128,
            "frames": round(seconds * 100),
        },
    }
    if audio not in defaults:
        raise ConfigError(f"{name}: audio must be one of {list(AUDIO)}, got {audio!r}")
    return {
        "kind": "audio",
        "features": audio,
        "feature_options": {**defaults[audio], **dict(options or {})},
    }


def video_reader(video: str, frames: int, fps: float | None, size: int) -> dict[str, Any]:
    """The ``video`` (a file, ``fps`` resampling its timeline first) or ``frames`` (a folder
    of extracted frames) reader options."""
    if video == "file":
        return {"kind": "video", "frames": frames, "fps": fps, "size": size}
    return {"kind": "frames", "frames": frames, "size": size}


def frame_folder(template: str, fps: float | None, name: str) -> str:
    """The frame folder's name for ``fps`` (``Image-{fps:02d}-FPS``: OGM-GE's extraction)."""
    if fps is None or int(fps) != fps or fps < 1:
        raise ConfigError(
            f"{name}: frame folders are named by a whole fps ({template}); got fps={fps!r}"
        )
    return template.format(fps=int(fps))


def layout_folders(
    name: str,
    root: str | Path | None,
    defaults: Mapping[str, str],
    folders: Mapping[str, str] | None,
    layout: str,
    video: str,
    fps: float | None,
) -> tuple[dict[str, str], Path, dict[str, Path]]:
    """For loaders whose audio is a wav folder or the video files' track (``layout`` ``wav`` |
    ``video``) and whose frames come from the videos or frame folders: the folder names (the
    ``defaults`` with the user's ``folders`` over them), the dataset root, and the folders the
    layout needs (checked for existence by :func:`check_folders`)."""
    if layout not in ("wav", "video"):
        raise ConfigError(f"{name}: layout must be 'wav' or 'video', got {layout!r}")
    if video not in VIDEO:
        raise ConfigError(f"{name}: video must be one of {list(VIDEO)}, got {video!r}")
    unknown = sorted(set(folders or {}) - set(defaults))
    if unknown:
        raise ConfigError(f"{name}: folders has unknown key(s) {unknown}; known: {list(defaults)}")
    names = {**defaults, **dict(folders or {})}
    base = dataset_root(root, name)
    need = {"audio": base / names["audio"]} if layout == "wav" else {}
    if layout == "video" or video == "file":
        need["video"] = base / names["video"]
    if video == "frames":
        need["frames"] = base / frame_folder(names["frames"], fps, name)
    return names, base, need


def check_folders(folders: Mapping[str, Path], name: str, layout: str) -> None:
    """Every folder of the layout exists: one error naming the first that does not."""
    for what, folder in folders.items():
        if not folder.is_dir():
            raise DataNotFoundError(
                f"{name}: {what} folder {folder} does not exist; expected {layout} "
                "(docs/datasets.md; the folder names can be changed with the folders option)"
            )


def build(
    name: str,
    root: Path,
    clips: Sequence[Clip],
    modalities: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str],
    *,
    layout: str,
    seed: int,
    val_fraction: float,
    on_error: OnError,
    augment: bool,
    prepared: str | None,
    info: Mapping[str, Any],
) -> MultimodalData:
    """The dataset of the listed clips. Clips absent from the copy (any of their files) are an
    error with their count and a few examples, unless ``on_error`` is ``skip``: then
    manifest_data leaves them out and records them (``info["skipped_rows"]``);
    ``info["missing_items"]`` counts them either way."""
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"{name}: on_error must be 'raise' or 'skip', got {on_error!r}")
    missing = [
        path
        for c in clips
        if (path := next((p for p in (c.audio, c.video) if not Path(media_file(p)).exists()), None))
    ]
    examples = ", ".join(media_file(p) for p in missing[:EXAMPLES])
    if len(missing) == len(clips):
        raise DataNotFoundError(
            f"{name}: none of the {len(clips)} listed clips is in {root} (e.g. {examples} does "
            f"not exist); expected {layout}"
        )
    if missing and on_error == "raise":
        raise DataNotFoundError(
            f"{name}: {len(missing)} of {len(clips)} listed clips are missing from {root} "
            f"(e.g. {examples}). A partial copy (YouTube-derived copies are never complete) "
            f"trains with on_error: skip, which leaves them out and records them "
            f"(info['skipped_rows']); `unipair datasets check {name} -o root={root}` lists "
            "every problem"
        )
    columns: dict[str, list[str | None]] = {
        "id": [c.id for c in clips],
        "audio": [c.audio for c in clips],
        "video": [c.video for c in clips],
        "label": [c.label for c in clips],
        "split": [c.split for c in clips],
    }
    table = ManifestTable(root, columns, list(range(1, len(clips) + 1)))
    return manifest_data(
        table,
        modalities,
        name=name,
        seed=seed,
        val_fraction=val_fraction,
        on_error=on_error,
        augment=augment,
        prepared=prepared,
        classes=classes,
        info={**info, "missing_items": len(missing)},
    )
