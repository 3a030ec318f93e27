"""Audio from media files: one recording (or a video's audio track) as a float32 array.

Uncompressed and lossless formats (wav, flac, ogg) go through soundfile; compressed and video
containers (mp3, mp4, m4a, flv, webm, mkv, avi, ...) through PyAV, the optional ``media``
extra, imported only when such a file is read. Both backends decode at the file's own rate and
resample with the same polyphase filter (``scipy.signal.resample_poly``, as
``unipair.data.audio.read_wav`` does), so a wav and its mp4 copy give the same samples up to
the codec's loss. A file that cannot give real audio (missing, corrupt, no audio stream, no
samples, NaN) raises a :mod:`unipair.errors` type naming the file, never a silent zero array.

A time segment (``start``/``end`` seconds) is read by seeking, so a long file costs only its
segment: soundfile seeks to the exact sample; PyAV seeks to a packet shortly before ``start``
(where the container's timestamps are sample-accurate) and cuts the decoded samples on their
timestamps, stopping after ``end``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["AV_EXTENSIONS", "FIT_MODES", "SOUNDFILE_EXTENSIONS", "fit_duration", "read_audio"]

Backend = Literal["soundfile", "av"]
SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".aif", ".aiff"})
AV_EXTENSIONS = frozenset(
    {".mp3", ".mp4", ".m4a", ".aac", ".flv", ".webm", ".mkv", ".avi", ".mov", ".opus"}
)
FIT_MODES = ("pad", "crop", "tile")
#: PyAV seeks this many seconds before a segment's start: a codec's first frames after a seek
#: decode without their predecessors' overlap (AAC, MP3), so they are decoded and dropped
PREROLL_S = 0.5


def read_audio(
    path: str | Path,
    rate: int | None = None,
    mono: bool = True,
    backend: Backend | None = None,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """The samples of ``path``: float32 [T] when ``mono`` (mean over channels), else [C, T].

    ``start`` and ``end`` (seconds, None: the file's start or end) read only the segment
    [start, end), at the file's rate, before resampling; a segment running past the end of the
    file keeps what the file holds, and one holding no sample is an error naming the file.

    ``rate`` resamples to that many Hz (None keeps the file's rate). ``backend`` overrides the
    choice by extension (case-insensitive), e.g. ``"av"`` for a wav PyAV should decode. Values
    are the decoder's floats, nominally in [-1, 1]; lossy codecs may overshoot slightly and
    are not clipped (the recipes that need it clip).
    """
    path = Path(path)
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or rate < 1):
        raise ConfigError(f"rate must be a positive integer number of Hz, got {rate!r}")
    if backend is None:
        backend = _backend_for(path)
    elif backend not in ("soundfile", "av"):
        raise ConfigError(f"unknown audio backend {backend!r}; expected 'soundfile' or 'av'")
    if (start is not None and not start >= 0) or (end is not None and not end > (start or 0.0)):
        raise ConfigError(f"audio segment [{start}, {end}) s of {path}: need 0 <= start < end")
    if not path.is_file():
        raise DataNotFoundError(f"audio file {path} does not exist")
    if backend == "soundfile":
        wave, file_rate = _read_soundfile(path, start, end)
    else:
        wave, file_rate = _read_av(path, start, end)
    if wave.shape[1] == 0:
        if start is not None or end is not None:
            raise DataFormatError(f"audio file {path} holds no sample in [{start}, {end}) s")
        raise DataFormatError(f"audio file {path} decodes to no samples")
    if not np.all(np.isfinite(wave)):
        raise DataFormatError(f"audio file {path} contains NaN or infinite samples")
    if mono:
        wave = wave.mean(axis=0, keepdims=True)
    if rate is not None and rate != file_rate:
        g = math.gcd(file_rate, rate)
        wave = resample_poly(wave, rate // g, file_rate // g, axis=1)
    return np.ascontiguousarray(wave[0] if mono else wave, dtype=np.float32)


def _backend_for(path: Path) -> Backend:
    suffix = path.suffix.lower()
    if suffix in SOUNDFILE_EXTENSIONS:
        return "soundfile"
    if suffix in AV_EXTENSIONS:
        return "av"
    known = sorted(SOUNDFILE_EXTENSIONS | AV_EXTENSIONS)
    raise DataFormatError(
        f"audio file {path}: unknown extension {suffix!r}; expected one of {known}, or pass "
        f"backend='soundfile' or backend='av'"
    )


def _read_soundfile(
    path: Path, start: float | None = None, end: float | None = None
) -> tuple[np.ndarray, int]:
    """[C, T] float32 and the rate, through libsndfile; a segment by seeking to its sample."""
    try:
        with sf.SoundFile(path) as f:
            rate = int(f.samplerate)
            lo = min(round((start or 0.0) * rate), f.frames)
            hi = f.frames if end is None else min(round(end * rate), f.frames)
            f.seek(lo)
            wave = f.read(max(hi - lo, 0), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        raise DataFormatError(f"cannot read audio file {path}: {e}") from None
    return wave.T, rate


def _read_av(
    path: Path, start: float | None = None, end: float | None = None
) -> tuple[np.ndarray, int]:
    """[C, T] float32 and the rate of the first audio stream, through PyAV (FFmpeg). A segment
    is cut on the first decoded frame's timestamp, after seeking ``PREROLL_S`` before it."""
    try:
        import av
    except ImportError:
        raise ImportError(
            f"reading {path.suffix or 'this'} files ({path}) needs PyAV: "
            "pip install 'unipair[media]'"
        ) from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataFormatError(f"media file {path} holds no audio stream")
            stream = container.streams.audio[0]
            # Seek only where timestamps count single samples: flv's milliseconds would misplace
            # the cut by up to half a millisecond, so such files are decoded from their start.
            tb = stream.time_base
            if start is not None and start > PREROLL_S and tb and tb * (stream.rate or 0) <= 1:
                container.seek(int((start - PREROLL_S) / tb), stream=stream)
            # Planar float at the first frame's layout and rate, whatever the codec's format.
            resampler = av.AudioResampler(format="fltp")
            chunks: list[np.ndarray] = []
            rate = 0
            times: list[float | None] = []  # the first decoded frame's time, seconds
            for frame in container.decode(stream):
                if not times:
                    times.append(frame.time)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
                    rate = out.sample_rate
                if end is not None and frame.time is not None and frame.time >= end:
                    break
            chunks += [out.to_ndarray() for out in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise DataFormatError(f"cannot read media file {path}: {e}") from None
    if not chunks:
        raise DataFormatError(f"media file {path} decodes to no samples")
    wave = np.concatenate(chunks, axis=1)
    if start is None and end is None:
        return wave, rate
    if times[0] is None:
        raise DataFormatError(f"media file {path}: its audio has no timestamps to cut a segment on")
    offset = round(times[0] * rate)  # the decoded samples start at this sample of the timeline
    lo = max(round((start or 0.0) * rate) - offset, 0)
    hi = wave.shape[1] if end is None else max(round(end * rate) - offset, lo)
    return wave[:, lo:hi], rate


def fit_duration(wave: np.ndarray, samples: int, mode: str = "pad") -> np.ndarray:
    """``wave`` ([T] or [C, T]) cut or extended along its last axis to exactly ``samples``.

    - ``"pad"``: keep the start; append zeros when short, drop the tail when long (the fbank
      recipes' pad/crop, here on samples).
    - ``"crop"``: keep the centre when long (as ``LogMel`` does); append zeros when short.
    - ``"tile"``: repeat the recording end to end, then cut (OGM-GE's
      ``np.tile(x, 3)[:3 * 22050]``; repeated as often as needed, so clips shorter than a
      third of the target still fill it, where OGM-GE's fixed 3 copies would not).
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples must be a positive integer, got {samples!r}")
    if mode not in FIT_MODES:
        raise ConfigError(f"unknown duration mode {mode!r}; expected one of {list(FIT_MODES)}")
    wave = np.asarray(wave)
    length = wave.shape[-1]
    if length == 0:
        raise DataFormatError("cannot fit an empty waveform to a duration")
    if mode == "tile" and length < samples:
        reps = [1] * (wave.ndim - 1) + [math.ceil(samples / length)]
        return np.tile(wave, reps)[..., :samples]
    if length >= samples:
        start = (length - samples) // 2 if mode == "crop" else 0
        return wave[..., start : start + samples]
    out = np.zeros((*wave.shape[:-1], samples), dtype=wave.dtype)
    out[..., :length] = wave
    return out
