"""AVE (Tian et al., ECCV 2018): 28 audio-visual event categories in 10-second YouTube videos.

The lists are the dataset's own (``trainSet.txt``, ``valSet.txt``, ``testSet.txt``: 3,339 /
402 / 402 rows ``Category&youtubeID&quality&start&end``, shipped as PMR ships them). As PMR
does, the class index is the order of first appearance in ``testSet.txt``, and only the
annotated event, seconds [start, end), is read: each cell carries the segment as a media
fragment (``AVE/<id>.mp4#t=start,end``), so the audio is cut to it and the frames are chosen
within it. A video listed twice in one list (two events, e.g. male and female speech over the
same seconds: 27 in train, 1 in val) keeps its first row only, as PMR keeps the first audio path
(OGM-GE's removed loader kept the last); the dropped rows are recorded in
``info["duplicates_dropped"]``. Videos listed in two lists (10 train/val, 8 train/test) stay in
both, as in the peers' code. One train row has an empty segment (``VWi2ENBuTbw``, 0 to 0 s): it
is left out and recorded in ``info["empty_segments"]``.

Layout (the official ``AVE_Dataset`` folder; names changeable with ``folders``)::

    root/AVE/<id>.mp4                         video (and audio with layout="video")
    root/Audios/<id>.wav                      layout="wav": PMR's extracted audio
    root/Image-{fps:02d}-FPS-SE/<id>/*.jpg    video="frames": PMR's event-only frames
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

__all__ = ["FOLDERS", "load_ave"]

NAME = "ave"
EXAMPLE = "Church bell&c---zaDCTaE&good&0&10"
LISTS = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
#: default folder names under root; the frames folder is formatted with fps
FOLDERS = {"video": "AVE", "audio": "Audios", "frames": "Image-{fps:02d}-FPS-SE"}


def load_ave(
    root: str | Path | None = None,
    layout: str = "video",
    audio: str = "fbank",
    frames: int = 3,
    video: str = "file",
    fps: int | None = 1,
    size: int = 224,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    lists: str | Path | None = None,
    folders: Mapping[str, str] | None = None,
    on_error: OnError = "raise",
    augment: bool = True,
    prepared: str | None = None,
    audio_options: Mapping[str, Any] | None = None,
) -> MultimodalData:
    """AVE's event segments: ``audio`` [1, F, T] and ``video`` [3, frames, size, size]; 28
    classes; the published train / val / test.

    ``layout``: ``video`` (audio from the mp4's track) or ``wav`` (``Audios/<id>.wav``);
    ``video``: ``file`` (frames of the segment, ``fps``-resampled from its first frame) or
    ``frames`` (event-only frame folders, read whole); ``folders`` overrides the folder names
    (keys ``video``, ``audio``, ``frames``). ``audio``: ``fbank`` [1, 1024, 128] (a 10 s event
    fills 998 frames), ``stft_ogm`` or ``logmel`` (10 s); ``audio_options`` override its
    feature options. ``classes``: load only these categories. ``lists``: a folder with your
    own ``trainSet.txt``, ``valSet.txt``, ``testSet.txt`` in the same format.
    """
    names, base, need = layout_folders(NAME, root, FOLDERS, folders, layout, video, fps)
    audio_at = f"{names['audio']}/<id>.wav" if layout == "wav" else f"{names['video']}/<id>.mp4"
    frames_at = f"{names['video']}/<id>.mp4" if video == "file" else f"{names['frames']}/<id>/"
    layout_text = f"audio in {audio_at}, frames from {frames_at}"
    check_folders(need, NAME, layout_text)
    listed = {part: read_list(NAME, file, lists, EXAMPLE) for part, file in LISTS.items()}
    shipped = _categories(read_list(NAME, LISTS["test"], None, EXAMPLE), ())
    known = shipped if lists is None else _categories(listed["test"], shipped)
    chosen = keep_classes(known, classes, NAME)
    clips: list[Clip] = []
    dropped: list[dict[str, Any]] = []
    empty: list[dict[str, Any]] = []
    kept: dict[str, set[str]] = {}
    for part, table in listed.items():
        seen: dict[str, str] = {}
        for line, text in table.lines:
            category, video_id, start, end = _row(table, line, text)
            where = {"list": LISTS[part], "line": line, "id": video_id, "category": category}
            if category not in known:
                raise table.error(
                    line, f"unknown category {category!r}; the categories are {known}"
                )
            if float(end) <= float(start):
                empty.append(where)
                continue
            if video_id in seen:
                dropped.append({**where, "kept": seen[video_id]})
                continue
            seen[video_id] = category
            if category not in chosen:
                continue
            segment = f"#t={start},{end}"
            track = base / names["video"] / f"{video_id}.mp4"
            sound = base / names["audio"] / f"{video_id}.wav" if layout == "wav" else track
            visual = f"{track}{segment}" if video == "file" else str(need["frames"] / video_id)
            clips.append(Clip(f"{part}/{video_id}", category, part, f"{sound}{segment}", visual))
        kept[part] = set(seen)
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
        val_fraction=0.1,  # unused: the val list is published
        on_error=on_error,
        augment=augment,
        prepared=prepared,
        info={
            "split_rule": (
                "the published trainSet/valSet/testSet lists; the annotated event segment "
                "[start, end) of each video; repeats within a list dropped (first kept)"
            ),
            "lists": {file: listed[part].sha256 for part, file in LISTS.items()},
            "duplicates_dropped": dropped,
            "empty_segments": empty,
            "videos_in_two_splits": {
                f"{a}/{b}": len(kept[a] & kept[b])
                for a, b in (("train", "val"), ("train", "test"), ("val", "test"))
            },
            "preprocessing": {"layout": layout, **modalities},
        },
    )


def _row(listed: SplitList, line: int, text: str) -> tuple[str, str, str, str]:
    """``Category&youtubeID&quality&start&end`` checked: (category, id, start, end)."""
    cells = [c.strip() for c in text.split("&")]
    if len(cells) != 5 or not cells[0] or not cells[1]:
        raise listed.error(line, f"expected 'Category&youtubeID&quality&start&end', got {text!r}")
    category, video_id, _, start, end = cells
    for value in (start, end):
        try:
            if float(value) < 0:
                raise ValueError
        except ValueError:
            raise listed.error(line, f"{value!r} is not a time in seconds") from None
    return category, video_id, start, end


def _categories(test: SplitList, allowed: Sequence[str]) -> list[str]:
    """The categories in order of first appearance in ``test`` (PMR's class index); with
    ``allowed`` (AVE's own, for a user's lists), any other is an error naming its line."""
    found: dict[str, None] = {}
    for line, text in test.lines:
        category = _row(test, line, text)[0]
        if allowed and category not in allowed:
            raise test.error(line, f"unknown category {category!r}; AVE's are {list(allowed)}")
        found[category] = None
    return list(found)
