"""Video clips as k RGB frames: the frame-selection rule, video files and frame folders.

The audio-visual peers (OGM-GE, MMPareto, BalanceBenchmark, ...) cut a clip into k equal
segments and take one frame per segment: the middle one for evaluation, a random one for
training. :func:`frame_indices` is that rule for any frame count; the readers apply it to a
video file (PyAV) or to a folder of extracted frames (OGM-GE's ``Image-01-FPS/<clip>/*.jpg``).
Each call reads one sample, so a dataset can call them from DataLoader workers; randomness
comes only from the caller's generator, which makes the choice reproducible. Heavy decoders are
optional extras, imported inside the functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from unipair.data.media.image import read_image
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["FRAME_SUFFIXES", "RULES", "frame_indices", "read_frame_folder", "read_video_frames"]

RULES = ("uniform", "random")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
#: How many frames a container's index may list beyond what the decoder outputs (edit lists,
#: decoder delay) before the file counts as truncated or corrupt.
COUNT_SLACK = 2


def frame_indices(
    n_frames: int, k: int, rule: str = "uniform", generator: torch.Generator | None = None
) -> list[int]:
    """k non-decreasing frame indices in [0, n_frames), one per equal segment of the clip.

    Segment i holds frames [floor(i n / k), floor((i + 1) n / k)), so every frame belongs to
    one segment. ``uniform`` (evaluation) takes each segment's middle frame, start + len // 2
    (the peers' ``i * seg + seg // 2`` when k divides n); ``random`` (training) draws one frame
    per segment from ``generator``, which it requires: an unseeded draw would make runs
    irreproducible. With fewer frames than k, segments are shorter than a frame and both rules
    take the frame under each segment's centre, floor((2i + 1) n / 2k): every frame is used, in
    order, k // n or k // n + 1 times, so a short clip still gives k frames, deterministically.
    """
    if rule not in RULES:
        raise ConfigError(f"unknown frame rule {rule!r}; expected one of {list(RULES)}")
    if k < 1:
        raise ConfigError(f"frames per clip must be at least 1, got {k}")
    if n_frames < 1:
        raise DataFormatError(f"cannot choose {k} frames from a clip of {n_frames} frames")
    if rule == "random" and generator is None:
        raise ConfigError(
            "frame rule 'random' needs a torch.Generator (see transforms.sample_generator)"
        )
    if n_frames < k:
        return [((2 * i + 1) * n_frames) // (2 * k) for i in range(k)]
    bounds = [(i * n_frames) // k for i in range(k + 1)]
    if rule == "uniform":
        return [lo + (hi - lo) // 2 for lo, hi in pairwise(bounds)]
    return [
        int(torch.randint(lo, hi, (1,), generator=generator).item()) for lo, hi in pairwise(bounds)
    ]


def read_video_frames(
    path: str | Path,
    k: int,
    rule: str = "uniform",
    generator: torch.Generator | None = None,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """k frames of the video file at ``path`` (mp4, flv, mkv, ...) as uint8 [k, H, W, 3] RGB.

    The frame count comes from the container's index where it has one (mp4/mov ``nb_frames``),
    else from counting the stream's packets, which reads the file without decoding it (flv).
    Then frames are decoded only up to the last chosen one, and only the chosen ones are
    converted to RGB. ``fps`` first resamples the frame timeline, as OGM-GE's extraction keeps
    one frame per second: resampled frame j is source frame floor(j r / fps) for
    j < ceil(n fps / r), r the stream's average frame rate (constant frame rate assumed).
    :func:`frame_indices` then chooses k frames of that timeline. ``start`` and ``end``
    (seconds, None: the clip's start or end) restrict the timeline to the frames shown in
    [start, end), frame i being shown at i / r: the fps resampling starts at the segment's
    first frame, and a segment without a frame is an error naming the file.

    If the decoder stops early, up to ``COUNT_SLACK`` frames short of the count, the frames are
    chosen again among those that decode; a larger shortfall (a truncated download) or a file
    without a video stream or without frames is a DataFormatError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"video file {path} does not exist")
    if fps is not None and not fps > 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    if (start is not None and not start >= 0) or (end is not None and not end > (start or 0.0)):
        raise ConfigError(f"video segment [{start}, {end}) s of {path}: need 0 <= start < end")
    segment = (start, end)
    av = _import_av()
    try:
        n, rate = _probe(av, path)
        if n == 0:
            raise DataFormatError(f"video file {path} holds no frames")
        wanted = _choose(n, rate, k, rule, generator, fps, path, segment)
        frames, decoded = _decode(av, path, wanted)
        if frames is None and decoded > 0 and n - decoded <= COUNT_SLACK:
            wanted = _choose(decoded, rate, k, rule, generator, fps, path, segment)
            frames, decoded = _decode(av, path, wanted)
    except av.FFmpegError as e:
        raise DataFormatError(f"cannot read video file {path}: {e}") from None
    if frames is None:
        raise DataFormatError(
            f"video file {path} lists {n} frames but only {decoded} decode; "
            "the file is truncated or corrupt"
        )
    return frames


def read_frame_folder(
    folder: str | Path, k: int, rule: str = "uniform", generator: torch.Generator | None = None
) -> np.ndarray:
    """k frames of a folder of extracted frames (``<clip>/00000.jpg ...``) as uint8 [k, H, W, 3].

    Frames are the folder's .jpg/.jpeg/.png files sorted by name, digit runs compared as
    numbers (``frame_2`` before ``frame_10``; zero-padded names sort as plain text). Never the
    ``os.listdir`` order, which is arbitrary and made some peers read the wrong frames. Only the
    chosen files are decoded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataNotFoundError(f"frame folder {folder} does not exist")
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise DataFormatError(
            f"frame folder {folder} holds no frames (files ending in {', '.join(FRAME_SUFFIXES)})"
        )
    chosen = frame_indices(len(files), k, rule, generator)
    images = {i: read_image(files[i]) for i in dict.fromkeys(chosen)}
    shapes = {i: img.shape for i, img in images.items()}
    if len(set(shapes.values())) > 1:
        sizes = ", ".join(f"{files[i].name} {list(s)}" for i, s in shapes.items())
        raise DataFormatError(f"frame folder {folder} mixes frame sizes: {sizes}")
    return np.stack([images[i] for i in chosen])


def _import_av() -> ModuleType:
    """``av`` (PyAV), or an ImportError saying how to install it."""
    try:
        import av
    except ImportError as e:
        raise ImportError(
            "reading video files needs PyAV, an optional extra: pip install 'unipair[media]'"
        ) from e
    return av


def _open(av: ModuleType, path: Path) -> Any:
    # Metadata in a legacy text encoding must not make a readable video unreadable; PyAV 19
    # dropped that option (opening then failed with a TypeError for every file)
    if int(av.__version__.split(".")[0]) >= 19:
        return av.open(str(path))
    return av.open(str(path), metadata_errors="ignore")


def _video_stream(av: ModuleType, container: Any, path: Path) -> Any:
    """The first real video stream; cover art in an audio file is not a video."""
    attached = av.stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not s.disposition & attached]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DataFormatError(
            f"video file {path} has no video stream (streams: {', '.join(kinds)})"
        )
    return streams[0]


def _probe(av: ModuleType, path: Path) -> tuple[int, Fraction | None]:
    """The frame count (index, else packets) and average frame rate of the video stream."""
    with _open(av, path) as container:
        stream = _video_stream(av, container, path)
        rate = stream.average_rate or stream.guessed_rate
        n = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    return n, rate


def _choose(
    n: int,
    rate: Fraction | None,
    k: int,
    rule: str,
    generator: torch.Generator | None,
    fps: float | None,
    path: Path,
    segment: tuple[float | None, float | None] = (None, None),
) -> list[int]:
    """Source frame indices of the k chosen frames, through the fps-resampled timeline of the
    segment's frames."""
    lo, hi = 0, n
    if segment != (None, None):
        if not rate:
            raise DataFormatError(
                f"video file {path} declares no frame rate, so it cannot be cut to a segment"
            )
        start, end = segment
        # frame i is shown at i / rate: the segment's frames are ceil(start r) .. ceil(end r) - 1
        # (seconds as the decimals they were written as: 0.1 s at 30 fps is frame 3, not 4)
        lo = math.ceil(Fraction(start or 0.0).limit_denominator(10**6) * rate)
        if end is not None:
            hi = min(n, math.ceil(Fraction(end).limit_denominator(10**6) * rate))
        if hi <= lo:
            raise DataFormatError(
                f"video file {path} shows no frame in [{start}, {end}) s "
                f"({n} frames at {float(rate):g} fps)"
            )
    if fps is None:
        return [lo + i for i in frame_indices(hi - lo, k, rule, generator)]
    if not rate:
        raise DataFormatError(
            f"video file {path} declares no frame rate, so it cannot be resampled to {fps} fps"
        )
    step = Fraction(rate) / Fraction(fps)  # source frames per resampled frame
    chosen = frame_indices(math.ceil((hi - lo) / step), k, rule, generator)
    return [lo + math.floor(j * step) for j in chosen]


def _decode(av: ModuleType, path: Path, wanted: Sequence[int]) -> tuple[np.ndarray | None, int]:
    """The wanted frames, decoding no further than the last one; (None, frames decoded) if the
    stream ends first. Every frame is scaled to the first frame's size (a stream may change
    resolution midway). One reformatter serves all frames: each frame's own would set up a new
    colour converter, which costs more than decoding."""
    last = max(wanted)
    need = set(wanted)
    got: dict[int, np.ndarray] = {}
    size: dict[str, int] = {}
    rgb = av.video.reformatter.VideoReformatter()
    decoded = 0
    with _open(av, path) as container:
        stream = _video_stream(av, container, path)
        # One thread: DataLoader workers already decode in parallel, and clips this small
        # decode no faster with threads (measured on H.264 up to 480x360).
        stream.thread_count = 1
        for frame in container.decode(stream):
            size = size or {"width": frame.width, "height": frame.height}
            if decoded in need:
                got[decoded] = rgb.reformat(frame, format="rgb24", **size).to_ndarray()
            if decoded == last:
                return np.stack([got[i] for i in wanted]), decoded + 1
            decoded += 1
    return None, decoded


def _natural_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key comparing digit runs as numbers; the name itself breaks ties (``01`` vs ``1``)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name
