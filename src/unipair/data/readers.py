"""Readers: how one manifest cell (a path, or a text) becomes one sample of a modality.

Reading is split in two so that a prepared cache can keep the costly, deterministic part:

* ``load(value, augment, generator)`` decodes: audio to features, a clip to its frames (the
  random frame of each segment when augmenting, else the middle one, resized to the eval size),
  a text to token ids. Without augmentation it is deterministic, which is what ``prepare``
  stores.
* ``finish(loaded, augment, generator)`` adds what is random or cheap: the train crop and flip
  (when augmenting) and the normalisation.

Randomness comes only from ``generator``, seeded per (run seed, epoch, sample index), so the
number of DataLoader workers and a resume never change what a sample looks like.

An audio or video cell may name a time segment with the W3C Media Fragments syntax,
``clip.mp4#t=2.5,7`` (seconds, [start, end); ``#t=3`` from 3 s to the end, ``#t=,4`` the first
4 s): only that segment is read and the frames are chosen within it (AVE's annotated events).
A ``#`` not followed by ``t=`` is part of the file name.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from unipair.data.batch import Affine, dequantize
from unipair.errors import ConfigError, DataFormatError
from unipair.registry import Registry

__all__ = ["READERS", "Reader", "create_reader", "infer_kind", "media_file", "split_time_fragment"]

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".opus"}
VIDEO_SUFFIXES = {".mp4", ".flv", ".avi", ".mkv", ".webm", ".mov"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
ARRAY_SUFFIXES = {".npy", ".pt", ".pth"}
_SECONDS = r"\d+(?:\.\d*)?|\.\d+"
#: the temporal dimension of a media fragment: ``#t=[npt:]start[,end]`` or ``#t=[npt:],end``
_TIME_FRAGMENT = re.compile(rf"#t=(?:npt:)?(?P<start>{_SECONDS})?(?:,(?P<end>{_SECONDS}))?")


def split_time_fragment(value: str) -> tuple[str, float | None, float | None]:
    """``(path, start, end)`` of a cell, seconds or None; a cell without ``#t=`` is all path.
    A malformed or empty segment is an error naming the cell: a silent whole-clip read would
    train on the wrong part of the clip."""
    at = value.rfind("#t=")
    if at < 0:
        return value, None, None
    m = _TIME_FRAGMENT.fullmatch(value, at)
    if m is None or (m["start"] is None and m["end"] is None):
        raise DataFormatError(
            f"{value}: malformed time segment; expected #t=start,end in seconds (e.g. #t=2,7.5)"
        )
    start = float(m["start"]) if m["start"] is not None else None
    end = float(m["end"]) if m["end"] is not None else None
    if end is not None and end <= (start or 0.0):
        raise DataFormatError(f"{value}: the time segment is empty (end <= start)")
    return value[:at], start, end


def media_file(value: str) -> str:
    """The file a cell names, without its time segment: for existence checks and the kind,
    which never fail on a malformed segment (reading the cell names that)."""
    at = value.rfind("#t=")
    return value if at < 0 else value[:at]


class Reader(ABC):
    """One modality's reader; ``params()`` is what a prepared cache is fingerprinted by."""

    kind: ClassVar[str]
    #: the modality's samples differ in length (padded per batch, with ``valid`` masks)
    variable_length: ClassVar[bool] = False
    #: the cell is a path (else: the value itself, e.g. a text)
    reads_files: ClassVar[bool] = True
    #: what is random in a training sample when augmenting ("": nothing, the sample is fixed)
    augments: ClassVar[str] = ""
    vocab: int | None = None

    @abstractmethod
    def params(self) -> dict[str, Any]: ...

    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """The shape of ``finish``'s output (for variable length: the longest)."""

    @abstractmethod
    def load(self, value: str, augment: bool, generator: torch.Generator | None) -> Any: ...

    def quantization(self, augment: bool) -> Affine | None:
        """(scale, shift) per channel when the reader's batches are uint8 standing for
        ``x * scale + shift`` (see ``MultimodalBatch.quantized``); None: float32 batches."""
        return None

    def finish(
        self,
        loaded: Any,
        augment: bool,
        generator: torch.Generator | None,
        out: Tensor | None = None,
    ) -> Tensor:
        """The sample as a tensor; a fixed-shape reader writes it into ``out`` (its row of the
        batch: float32 of ``shape()``, or uint8 channels-last when quantized) when given,
        saving the copy a stack would make."""
        if out is None:
            return torch.as_tensor(np.asarray(loaded))
        x = np.asarray(loaded)
        if x.shape != tuple(out.shape):
            raise DataFormatError(f"decoded to shape {list(x.shape)}; expected {list(out.shape)}")
        np.copyto(out.numpy(), x, casting="same_kind")
        return out

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(sorted(self.params().items())).encode()).hexdigest()[:16]


READERS: Registry[Callable[..., Reader]] = Registry("reader")


def create_reader(kind: str, **options: Any) -> Reader:
    """The reader of ``kind`` (audio, video, frames, image, text, array) with ``options``;
    an option the reader does not take is named."""
    factory = READERS.get(kind)
    try:
        return factory(**options)
    except TypeError as e:
        raise ConfigError(f"{kind} reader: {e}") from None


def infer_kind(value: str, root: Path) -> str:
    """The reader kind for a cell, from its file extension (a folder: extracted frames)."""
    value = media_file(value)
    suffix = Path(value).suffix.lower()
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in ARRAY_SUFFIXES:
        return "array"
    if (root / value).is_dir():
        return "frames"
    return "text"


@READERS.register("audio")
class AudioReader(Reader):
    """A recording (or the audio track of a video) as features: ``fbank`` (Kaldi, the MLA /
    MMPareto recipe), ``stft_ogm`` (OGM-GE's log-STFT) or ``logmel``; read at the features'
    sample rate unless ``rate`` is given; ``duration`` seconds fits the waveform first.
    ``channel_first`` gives 2-D features a leading channel ([1, F, T]) for image encoders.

    Features that keep every frame (``fbank`` with ``frames: null``) of recordings not fitted
    to a ``duration`` differ in length: the samples are then [T, bins] sequences, padded per
    batch with ``valid`` masks for sequence encoders, and ``max_frames`` (required) keeps the
    first frames of a longer recording."""

    kind = "audio"

    def __init__(
        self,
        features: str = "fbank",
        feature_options: Mapping[str, Any] | None = None,
        rate: int | None = None,
        duration: float | None = None,
        fit: str = "pad",
        channel_first: bool = True,
        max_frames: int | None = None,
    ) -> None:
        from unipair.data.media.features import create_audio_features

        self.features = create_audio_features(features, **dict(feature_options or {}))
        self.name = features
        self.rate = int(rate or self.features.sample_rate)
        self.duration, self.fit, self.channel_first = duration, fit, channel_first
        self.variable = duration is None and getattr(self.features, "shape", ()) is None
        if self.variable and (
            isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
        ):
            raise ConfigError(
                f"audio reader: {features} features with frames: null give recordings of "
                f"different lengths; give max_frames (a positive integer: the longest sequence "
                f"kept), or a duration to fit every recording to; got max_frames={max_frames!r}"
            )
        if not self.variable and max_frames is not None:
            raise ConfigError(
                "audio reader: max_frames applies to variable-length features only (frames: "
                "null and no duration)"
            )
        self.max_frames = max_frames
        probe = np.zeros(round((duration or 1.0) * self.rate), np.float32)
        probed = tuple(self._features(probe).shape)
        self._shape = (int(max_frames), *probed[1:]) if self.variable else probed  # type: ignore[arg-type]

    @property
    def variable_length(self) -> bool:  # type: ignore[override]
        return self.variable

    def params(self) -> dict[str, Any]:
        params = {
            "kind": self.kind,
            "features": self.name,
            **{f"feature.{k}": v for k, v in self.features.params().items()},
            "rate": self.rate,
            "duration": self.duration,
            "fit": self.fit,
            "channel_first": self.channel_first,
        }
        return params if self.max_frames is None else {**params, "max_frames": self.max_frames}

    def shape(self) -> tuple[int, ...]:
        return self._shape

    def _features(self, wave: np.ndarray) -> Tensor:
        x = self.features(wave).float()
        if self.variable:
            return x[: self.max_frames]  # [T, bins]: a sequence, padded per batch
        return x.unsqueeze(0) if self.channel_first and x.dim() == 2 else x

    def load(self, value: str, augment: bool, generator: torch.Generator | None) -> Tensor:
        from unipair.data.media.audio import fit_duration, read_audio

        path, start, end = split_time_fragment(value)
        wave = read_audio(path, self.rate, start=start, end=end)
        if self.duration is not None:
            wave = fit_duration(wave, round(self.duration * self.rate), self.fit)
        return self._features(wave)


class _Frames(Reader):
    """Shared part of clips and images: the train and eval transforms."""

    augments = "random crop and flip"

    def __init__(
        self,
        size: int = 224,
        train: Mapping[str, Any] | None = None,
        eval: Mapping[str, Any] | None = None,
    ) -> None:
        from unipair.data.media.transforms import create_transform

        self.size = size
        self.train = create_transform("train", size=size, **dict(train or {}))
        self.eval = create_transform("eval", size=size, **dict(eval or {}))

    def _transform_params(self) -> dict[str, Any]:
        return {"train": self.train.params(), "eval": self.eval.params()}

    def _resized(self, frames: np.ndarray) -> np.ndarray:
        """The eval resize alone, channels-last uint8 as decoded: what a prepared cache stores."""
        return self.eval.quantized(frames).numpy()

    def finish(
        self,
        loaded: Any,
        augment: bool,
        generator: torch.Generator | None,
        out: Tensor | None = None,
    ) -> Tensor:
        frames = np.asarray(loaded)
        if augment:
            if out is None:
                return self.train(frames, generator)
            return self.train.quantized(frames, generator, out=out)
        # loaded without augmentation, the frames have the eval geometry already (``load``
        # and prepared caches give ``_resized``): only the normalisation is left to apply;
        # resizing again would crop a centre crop twice
        if out is not None:
            return super().finish(frames, augment, generator, out)  # the bytes, into the row
        x = torch.from_numpy(np.ascontiguousarray(frames))
        return dequantize(x, *self.eval.affine(), batched=False)

    def quantization(self, augment: bool) -> Affine | None:
        return (self.train if augment else self.eval).affine()


@READERS.register("video")
class VideoReader(_Frames):
    """``frames`` frames of a video file (PyAV), one per equal segment: a random one when
    augmenting, the middle one otherwise; ``fps`` resamples the timeline first (OGM-GE
    extracts at 1 fps)."""

    kind = "video"
    augments = "random frames, crop and flip"

    def __init__(self, frames: int = 3, fps: float | None = None, **transforms: Any) -> None:
        super().__init__(**transforms)
        self.frames, self.fps = frames, fps

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "frames": self.frames, "fps": self.fps,
                **self._transform_params()}  # fmt: skip

    def shape(self) -> tuple[int, ...]:
        return (3, self.frames, *self.eval.size)

    def _read(self, value: str, rule: str, generator: torch.Generator | None) -> np.ndarray:
        from unipair.data.media.video import read_video_frames

        path, start, end = split_time_fragment(value)
        return read_video_frames(
            path, self.frames, rule, generator, fps=self.fps, start=start, end=end
        )

    def load(self, value: str, augment: bool, generator: torch.Generator | None) -> np.ndarray:
        if augment:
            return self._read(value, "random", generator)
        return self._resized(self._read(value, "uniform", None))


@READERS.register("frames")
class FramesReader(VideoReader):
    """Like ``video``, from a folder of already extracted frames (``<clip>/*.jpg``, in sorted
    name order)."""

    kind = "frames"

    def __init__(self, frames: int = 3, **transforms: Any) -> None:
        super().__init__(frames=frames, **transforms)

    def _read(self, value: str, rule: str, generator: torch.Generator | None) -> np.ndarray:
        from unipair.data.media.video import read_frame_folder

        path, start, end = split_time_fragment(value)
        if start is not None or end is not None:
            raise DataFormatError(
                f"{value}: a frame folder cannot be cut to a time segment; give the video file, "
                "or a folder holding the segment's frames only"
            )
        return read_frame_folder(path, self.frames, rule, generator)


@READERS.register("image")
class ImageReader(_Frames):
    """One image (Pillow) as [3, size, size]."""

    kind = "image"

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._transform_params()}

    def shape(self) -> tuple[int, ...]:
        return (3, *self.eval.size)

    def load(self, value: str, augment: bool, generator: torch.Generator | None) -> np.ndarray:
        from unipair.data.media.image import read_image

        image = read_image(value)
        return image if augment else self._resized(image)


@READERS.register("text")
class TextReader(Reader):
    """The cell's text as token ids from a local tokenizer (a ``tokenizer.json`` or a Hugging
    Face tokenizer folder; never downloaded); MLA's recipe is ``max_length: 256,
    special_tokens: false``."""

    kind = "text"
    variable_length = True
    reads_files = False

    def __init__(self, tokenizer: str, max_length: int = 256, special_tokens: bool = True) -> None:
        from unipair.data.media.text import Tokenize, load_tokenizer

        loaded = load_tokenizer(tokenizer)
        self.tokenize = Tokenize(loaded, max_length, special_tokens)
        self.path, self.max_length = str(tokenizer), max_length
        size = getattr(loaded, "get_vocab_size", None)
        self.vocab = int(size()) if size is not None else len(loaded)

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.tokenize.params()}

    def shape(self) -> tuple[int, ...]:
        return (self.max_length,)

    def load(self, value: str, augment: bool, generator: torch.Generator | None) -> np.ndarray:
        ids, _ = self.tokenize(value)
        return ids


@READERS.register("array")
class ArrayReader(Reader):
    """Precomputed features per sample (``.npy``, ``.pt``): ``dims`` is the shape with
    ``null`` for a free length (``[null, 74]``: [T, 74] sequences, padded per batch up to
    ``max_length`` steps)."""

    kind = "array"

    def __init__(self, dims: list[int | None], max_length: int | None = None) -> None:
        self.dims = list(dims)
        free = [i for i, d in enumerate(self.dims) if d is None]
        if free not in ([], [0]):
            raise ConfigError(f"array dims {dims}: only the first dimension may be null")
        if free and max_length is None:
            raise ConfigError(f"array dims {dims}: give max_length for the free first dimension")
        self.max_length = max_length
        self.variable = bool(free)

    @property
    def variable_length(self) -> bool:  # type: ignore[override]
        return self.variable

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "dims": self.dims, "max_length": self.max_length}

    def shape(self) -> tuple[int, ...]:
        if self.variable:
            return (int(self.max_length or 0), *self.dims[1:])  # type: ignore[arg-type]
        return tuple(int(d) for d in self.dims)  # type: ignore[arg-type]

    def load(self, value: str, augment: bool, generator: torch.Generator | None) -> np.ndarray:
        from unipair.data.media.arrays import read_array

        x = read_array(value, expect_dims=self.dims)
        if self.variable and self.max_length is not None and x.shape[0] > self.max_length:
            x = x[: self.max_length]  # the first max_length steps, as a tokenizer truncates
        return x
