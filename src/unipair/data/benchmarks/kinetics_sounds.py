"""Kinetics-Sounds as OGM-GE lists it: 31 classes, 14,799 train / 2,597 test 10-second clips.

The lists (shipped in ``unipair/data/splits/kinetics_sounds/``) hold rows
``<id>,10,<label index>``; no class names are published with them, so the classes are the
indices ``"0"`` .. ``"30"``. The clips come from YouTube, so every copy misses some: a clip
absent from yours is an error naming how many are missing unless ``on_error: skip``, which
leaves them out and records them. Validation is carved from train, stratified and seeded.

Layouts (folder names changeable with ``folders``)::

    root/audio/<id>.wav                      layout="wav": audio from wav files
    root/video/<id>.mp4                      layout="video": audio from the video's track;
                                             video="file": frames from the video (PyAV)
    root/Image-{fps:02d}-FPS/<id>/*.jpg      video="frames": extracted frames (OGM-GE's 1 fps)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unipair.data.benchmarks._av import (
    Clip,
    SplitList,
    audio_reader,
    build,
    check_folders,
    keep_classes,
    layout_folders,
    read_list,
    video_reader,
)
from unipair.data.dataset import MultimodalData
from unipair.data.manifest import OnError

__all__ = ["FOLDERS", "load_kinetics_sounds"]

NAME = "kinetics_sounds"
NUM_CLASSES = 31
#: default folder names under root; the frames folder is formatted with fps
FOLDERS = {"audio": "audio", "video": "video", "frames": "Image-{fps:02d}-FPS"}


def load_kinetics_sounds(
    root: str | Path | None = None,
    layout: str = "wav",
    audio: str = "fbank",
    frames: int = 3,
    video: str = "file",
    fps: int | None = 1,
    size: int = 224,
    seed: int = 0,
    val_fraction: float = 0.1,
    classes: Sequence[str | int] | None = None,
    lists: str | Path | None = None,
    folders: Mapping[str, str] | None = None,
    video_suffix: str = ".mp4",
    on_error: OnError = "raise",
    augment: bool = True,
    prepared: str | None = None,
    audio_options: Mapping[str, Any] | None = None,
) -> MultimodalData:
    """Kinetics-Sounds' ``audio`` [1, F, T] and ``video`` [3, frames, size, size]; 31 classes.

    ``layout``: ``wav`` or ``video`` (where the audio comes from, see the module doc);
    ``video``: ``file`` or ``frames``; ``folders`` overrides the folder names (keys
    ``audio``, ``video``, ``frames``), ``video_suffix`` the video files' extension. ``audio``:
    ``fbank`` [1, 1024, 128] unnormalised (``audio_options={"normalize": "ks"}`` gives OGM-GE's
    normalised recipe), ``stft_ogm`` or ``logmel`` (10 s). ``frames`` per clip from the
    ``fps``-resampled timeline (OGM-GE: 3 of the 1-fps frames). ``classes``: load only these
    label indices. ``lists``: a folder with your own ``train.txt`` / ``test.txt``.
    """
    names, base, need = layout_folders(NAME, root, FOLDERS, folders, layout, video, fps)
    in_video = f"{names['video']}/<id>{video_suffix}"
    audio_at = f"{names['audio']}/<id>.wav" if layout == "wav" else in_video
    frames_at = in_video if video == "file" else f"{need['frames'].name}/<id>/*.jpg"
    layout_text = f"audio in {audio_at}, frames from {frames_at}"
    check_folders(need, NAME, layout_text)
    known = [str(i) for i in range(NUM_CLASSES)]
    chosen = keep_classes(known, classes, NAME)
    clips: list[Clip] = []
    digests = {}
    for part in ("train", "test"):
        listed = read_list(NAME, f"{part}.txt", lists, "--4-0ihtnBU_000058_000068,10,4")
        digests[f"{part}.txt"] = listed.sha256
        for line, text in listed.lines:
            clip, label = _row(listed, line, text)
            if label not in chosen:
                continue
            track = base / names["video"] / f"{clip}{video_suffix}"
            sound = base / names["audio"] / f"{clip}.wav" if layout == "wav" else track
            visual = track if video == "file" else need["frames"] / clip
            clips.append(Clip(clip, label, part, str(sound), str(visual)))
    modalities = {
        "audio": audio_reader(audio, audio_options, 10.0, NAME),
        "video": video_reader(video, frames, fps, size),
    }
    return build(
        NAME,
        base,
        clips,
        modalities,
        chosen,
        layout=layout_text,
        seed=seed,
        val_fraction=val_fraction,
        on_error=on_error,
        augment=augment,
        prepared=prepared,
        info={
            "split_rule": (
                f"OGM-GE's train/test lists; val = {val_fraction} of train, stratified by "
                f"class (seed {seed})"
            ),
            "lists": digests,
            "preprocessing": {"layout": layout, **modalities},
        },
    )


def _row(listed: SplitList, line: int, text: str) -> tuple[str, str]:
    """``<id>,10,<label index>`` checked; the label as its class name (the index)."""
    cells = [c.strip() for c in text.split(",")]
    if len(cells) != 3 or not cells[0]:
        raise listed.error(line, f"expected '<id>,10,<label index>', got {text!r}")
    label = cells[2]
    if not label.isdigit() or int(label) >= NUM_CLASSES:
        raise listed.error(line, f"label {label!r} is not a class index 0..{NUM_CLASSES - 1}")
    return cells[0], str(int(label))
