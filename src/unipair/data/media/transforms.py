"""Train and eval transforms for images and clips, with per-sample seeded randomness.

The peers train with ``RandomResizedCrop(224)`` + horizontal flip and evaluate with
``Resize((224, 224))``, both normalised with the ImageNet mean/std (OGM-GE, MMPareto, MLA). Here
they take the readers' uint8 frames, [H, W, 3] or a clip [k, H, W, 3], and return float32
channels-first tensors, [3, H', W'] or [3, k, H', W'] (the clip layout ResNet18Encoder reads).
A clip gets one crop and one flip for all its frames, so its frames stay aligned.

Randomness comes only from the ``generator`` argument. Seeded by :func:`sample_generator` per
(run seed, epoch, sample index), a sample's augmentation depends neither on the DataLoader
worker that reads it nor on the order samples are read, so a resumed run and any number of
workers see the same data. Resizing is torch's antialiased interpolation on uint8 (Pillow's
filters; torchvision is not needed). ``params()`` describes a transform for cache fingerprints,
and ``create_transform(**params)`` rebuilds it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unipair.data.batch import Affine, dequantize
from unipair.errors import ConfigError, DataFormatError, UnknownNameError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TRANSFORMS",
    "EvalTransform",
    "FrameTransform",
    "TrainTransform",
    "create_transform",
    "sample_generator",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")
EVAL_MODES = ("resize", "center_crop")
#: torchvision's RandomResizedCrop tries this many random boxes before its central fallback.
CROP_ATTEMPTS = 10


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator for one sample in one epoch of a run.

    Its seed is ``numpy.random.SeedSequence([seed, epoch, index]).generate_state(1,
    numpy.uint64)[0]``: SeedSequence hashes the three numbers together, so neighbouring triples
    give unrelated streams (a sum such as seed + epoch * N + index collides across runs), and
    the result depends on the triple only, not on the worker, the call order or torch's global
    random state.
    """
    for option, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ConfigError(f"sample_generator: {option} must be an integer >= 0, got {value!r}")
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(
        1, dtype=np.uint64
    )[0]
    return torch.Generator().manual_seed(int(state))


class FrameTransform:
    """Base of the transforms: option checks, input layout, resizing and normalisation."""

    name: ClassVar[str]

    def __init__(
        self,
        size: int | Sequence[int],
        interpolation: str,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.size = _pair("size", size, int, lambda v: v > 0, "positive integers")
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}"
            )
        self.interpolation = interpolation
        self.mean = _triple("mean", mean, math.isfinite, "finite numbers")
        self.std = _triple("std", std, lambda v: v > 0 and math.isfinite(v), "positive numbers")

    def params(self) -> dict[str, Any]:
        """Every option, JSON-ready: for cache fingerprints and ``create_transform(**params)``."""
        return {
            "name": self.name,
            "size": list(self.size),
            **self._own_params(),
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if k != "name")
        return f"{type(self).__name__}({options})"

    def __call__(self, frames: np.ndarray, generator: torch.Generator | None = None) -> Tensor:
        """float32 [3, H', W'] for an image [H, W, 3], [3, k, H', W'] for a clip [k, H, W, 3]."""
        return dequantize(self.quantized(frames, generator), *self.affine(), batched=False)

    def affine(self) -> Affine:
        """(scale, shift) per channel taking :meth:`quantized`'s bytes to the normalised
        floats: 1 / (255 std) and -mean / std."""
        scale = tuple(1.0 / (255.0 * s) for s in self.std)
        shift = tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))
        return scale, shift

    def quantized(
        self,
        frames: np.ndarray,
        generator: torch.Generator | None = None,
        out: Tensor | None = None,
    ) -> Tensor:
        """The transformed frames before normalisation, uint8 and channels-last as decoded
        ([H', W', 3] or [k, H', W', 3]); written into ``out`` when given (a batch's row)."""
        if (
            not isinstance(frames, np.ndarray)
            or frames.dtype != np.uint8
            or frames.ndim not in (3, 4)
            or frames.shape[-1] != 3
            or 0 in frames.shape
        ):
            got = (
                f"{frames.dtype} {list(frames.shape)}"
                if isinstance(frames, np.ndarray)
                else type(frames).__name__
            )
            raise DataFormatError(
                f"{self.name} transform takes uint8 frames [H, W, 3] or [k, H, W, 3], got {got}"
            )
        clip = torch.from_numpy(np.ascontiguousarray(frames if frames.ndim == 4 else frames[None]))
        # [k, 3, H, W] with channels-last strides: torch's fast uint8 resampling path.
        resized = self._apply(clip.permute(0, 3, 1, 2), generator).permute(0, 2, 3, 1)
        shape = tuple(resized.shape if frames.ndim == 4 else resized.shape[1:])
        if out is None:
            out = torch.empty(shape, dtype=torch.uint8)
        elif tuple(out.shape) != shape or out.dtype != torch.uint8:
            raise DataFormatError(
                f"{self.name} transform gives uint8 {list(shape)}; the output given is "
                f"{out.dtype} {list(out.shape)}"
            )
        out.copy_(resized if frames.ndim == 4 else resized[0])  # channels-last: a plain copy
        return out

    def _own_params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _apply(self, clip: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _resize(self, clip: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(clip.shape[-2:]) == tuple(size):
            return clip  # at scale 1 the antialiased filter is the identity
        clip = clip.contiguous(memory_format=torch.channels_last)
        return F.interpolate(
            clip, size=size, mode=self.interpolation, antialias=True, align_corners=False
        )


class TrainTransform(FrameTransform):
    """RandomResizedCrop + horizontal flip (torchvision's sampling), then normalisation.

    ``scale`` bounds the crop's share of the frame's area and ``ratio`` its width/height; the
    crop is resized to ``size`` (int or (height, width)) and mirrored with probability
    ``flip``. One crop and one flip serve every frame of a clip.
    """

    name = "train"

    def __init__(
        self,
        size: int | Sequence[int] = 224,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        interpolation: str = "bilinear",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(size, interpolation, mean, std)
        self.scale = _pair("scale", scale, float, lambda v: 0 < v <= 1, "numbers in (0, 1]")
        self.ratio = _pair("ratio", ratio, float, lambda v: 0 < v < math.inf, "positive numbers")
        for option, (lo, hi) in (("scale", self.scale), ("ratio", self.ratio)):
            if lo > hi:
                raise ConfigError(f"{option} must be (low, high) with low <= high, got {[lo, hi]}")
        if isinstance(flip, bool) or not isinstance(flip, int | float) or not 0 <= flip <= 1:
            raise ConfigError(f"flip is a probability in [0, 1], got {flip!r}")
        self.flip = float(flip)

    def crop_box(
        self, height: int, width: int, generator: torch.Generator
    ) -> tuple[int, int, int, int]:
        """(top, left, h, w) of a random crop: torchvision's ``RandomResizedCrop.get_params``
        with draws from ``generator``, including its central fallback after 10 misses."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(CROP_ATTEMPTS):
            u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator).item())
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator).item())
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def _own_params(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "ratio": list(self.ratio), "flip": self.flip}

    def _apply(self, clip: Tensor, generator: torch.Generator | None) -> Tensor:
        if generator is None:
            raise ConfigError(
                "the train transform needs a torch.Generator (see sample_generator): an "
                "unseeded augmentation would make runs irreproducible"
            )
        top, left, h, w = self.crop_box(clip.shape[-2], clip.shape[-1], generator)
        mirror = torch.rand((), generator=generator, dtype=torch.float64).item() < self.flip
        crop = clip[..., top : top + h, left : left + w]
        # mirrored before resampling: the same bytes as after (the filters are symmetric;
        # tested), one copy of the crop instead of another of the output
        return self._resize(crop.flip(-1) if mirror else crop, self.size)


class EvalTransform(FrameTransform):
    """Deterministic resize, then normalisation; the generator is ignored.

    ``mode="resize"`` squashes the frame to ``size`` (the peers' ``Resize((224, 224))``);
    ``mode="center_crop"`` resizes the shorter side to ``shorter`` (default: the crop size)
    and cuts the central ``size`` crop (MLA's M3AE path: ``Resize(256)`` + ``CenterCrop(256)``;
    ImageNet's: ``shorter=256, size=224``), with torchvision's rounding.
    """

    name = "eval"

    def __init__(
        self,
        size: int | Sequence[int] = 224,
        mode: str = "resize",
        shorter: int | None = None,
        interpolation: str = "bilinear",
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(size, interpolation, mean, std)
        if mode not in EVAL_MODES:
            raise ConfigError(f"mode must be one of {list(EVAL_MODES)}, got {mode!r}")
        self.mode = mode
        if mode == "resize":
            if shorter is not None:
                raise ConfigError("shorter applies to mode 'center_crop' only, not 'resize'")
            self.shorter = None
        else:
            self.shorter = max(self.size) if shorter is None else shorter
            if (
                isinstance(self.shorter, bool)
                or not isinstance(self.shorter, int)
                or self.shorter < max(self.size)
            ):
                raise ConfigError(
                    f"shorter must be an integer >= the crop size {max(self.size)}, got {shorter!r}"
                )

    def _own_params(self) -> dict[str, Any]:
        return {"mode": self.mode, "shorter": self.shorter}

    def _apply(self, clip: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.shorter is None:
            return self._resize(clip, self.size)
        h, w = clip.shape[-2:]
        s = self.shorter
        # torchvision's Resize(int): the longer side is truncated, not rounded.
        new = (s, int(s * w / h)) if h <= w else (int(s * h / w), s)
        out = self._resize(clip, new)
        top = round((new[0] - self.size[0]) / 2.0)
        left = round((new[1] - self.size[1]) / 2.0)
        return out[..., top : top + self.size[0], left : left + self.size[1]]


TRANSFORMS: dict[str, type[FrameTransform]] = {"train": TrainTransform, "eval": EvalTransform}


def create_transform(name: str, **options: Any) -> FrameTransform:
    """The ``train`` or ``eval`` transform with ``options``; an option the transform does not
    have is a ConfigError naming it (a typo must not fall back to a default silently)."""
    if name not in TRANSFORMS:
        raise UnknownNameError(f"unknown transform {name!r}; expected one of {list(TRANSFORMS)}")
    cls = TRANSFORMS[name]
    known = list(inspect.signature(cls).parameters)
    unknown = [option for option in options if option not in known]
    if unknown:
        raise ConfigError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for the {name} transform; expected some of {known}"
        )
    return cls(**options)


def _pair(
    option: str, value: Any, kind: type, ok: Callable[[Any], bool], what: str
) -> tuple[Any, Any]:
    """(a, b) from a pair (or one int for a size), each of ``kind`` and passing ``ok``."""
    items = [value, value] if kind is int and isinstance(value, int) else value
    if isinstance(items, str | bytes) or not isinstance(items, Sequence) or len(items) != 2:
        raise ConfigError(f"{option} must be a pair of {what}, got {value!r}")
    pair = tuple(_number(option, v, kind, value) for v in items)
    if not all(ok(v) for v in pair):
        raise ConfigError(f"{option} must be {what}, got {value!r}")
    return pair


def _triple(
    option: str, value: Any, ok: Callable[[float], bool], what: str
) -> tuple[float, float, float]:
    """Three per-channel (R, G, B) numbers passing ``ok``."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 3:
        raise ConfigError(f"{option} must be 3 numbers (R, G, B), got {value!r}")
    numbers = tuple(_number(option, v, float, value) for v in value)
    if not all(ok(v) for v in numbers):
        raise ConfigError(f"{option} must be {what}, got {value!r}")
    return numbers


def _number(option: str, v: Any, kind: type, whole: Any) -> int | float:
    """``v`` as ``kind``: an int for int options (no bools, no floats), a float for floats."""
    numeric = int | np.integer if kind is int else int | float | np.integer | np.floating
    if isinstance(v, bool) or not isinstance(v, numeric):
        raise ConfigError(f"{option} must hold {kind.__name__}s, got {whole!r}")
    return kind(v)
