"""Audio features of one waveform, computed in torch, with the peers' recipes as defaults.

Each feature is a small class: ``sample_rate`` says at which rate to read the audio
(:func:`unipair.data.media.audio.read_audio`), ``__call__(wave)`` returns a float32 tensor of a
fixed shape, and ``params()`` lists every number that changes the output, so a cache of
features can be keyed on ``(registry name, params())``. ``create_audio_features(name, **opts)``
builds one from a config such as ``{"kind": "fbank", "frames": 1024}``.

- ``stft_ogm`` (:class:`LogSTFT`): OGM-GE's CREMA-D spectrogram, [257, 188].
- ``fbank`` (:class:`KaldiFbank`): the Kaldi fbank of OGM-GE's Kinetics-Sounds script, MLA,
  MMPareto and BalanceBenchmark, [1024, 128].
- ``logmel`` (:class:`unipair.data.audio.LogMel`): unipair's own log-mel (avdigits).

Spectra are computed in float64 and returned as float32: the results do not depend on the FFT
library's round-off, which otherwise dominates the log of near-silent bins.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from unipair.data.audio import LogMel
from unipair.data.media.audio import FIT_MODES, fit_duration
from unipair.errors import ConfigError, DataFormatError
from unipair.registry import Registry

__all__ = [
    "AUDIO_FEATURES",
    "KS_FBANK_MEAN",
    "KS_FBANK_STD",
    "AudioFeatures",
    "KaldiFbank",
    "LogMel",
    "LogSTFT",
    "create_audio_features",
    "kaldi_mel_banks",
    "list_audio_features",
]

# OGM-GE's Kinetics-Sounds statistics of the fbank below (process_audio.py), used as
# (x - mean) / (2 * std) by MMPareto, Re-learning and BalanceBenchmark.
KS_FBANK_MEAN = -4.503877
KS_FBANK_STD = 5.141276
FLOAT_EPS = float(np.finfo(np.float32).eps)  # Kaldi's log floor (std::numeric_limits<float>)


class AudioFeatures(Protocol):
    """What a dataset needs from a feature: the rate to read at, a cache key, the transform."""

    sample_rate: int

    def params(self) -> dict[str, object]: ...

    def __call__(self, wave: np.ndarray | Tensor) -> Tensor: ...


AUDIO_FEATURES: Registry[Callable[..., AudioFeatures]] = Registry("audio features")
AUDIO_FEATURES.register("logmel")(LogMel)


def _mono(wave: np.ndarray | Tensor) -> np.ndarray:
    """One float64 1-D waveform (features are defined on mono audio only)."""
    x = wave.detach().cpu().numpy() if isinstance(wave, Tensor) else np.asarray(wave)
    if x.ndim != 1:
        raise DataFormatError(f"expected a mono waveform [T], got shape {tuple(x.shape)}")
    return np.ascontiguousarray(x, dtype=np.float64)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


STFT_WINDOWS: dict[str, Callable[..., Tensor]] = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
}


@AUDIO_FEATURES.register("stft_ogm")
class LogSTFT:
    """``log(|STFT| + eps)`` of a fixed-length clip, [n_fft // 2 + 1, frames].

    Defaults are OGM-GE's CREMA-D recipe (``CramedDataset``): audio at 22,050 Hz tiled to 3 s
    (``np.tile(x, 3)[:66150]``), clipped to [-1, 1], ``librosa.stft(n_fft=512, hop_length=353)``
    and ``log(|S| + 1e-7)``: 257 bins by ``1 + 66150 // 353 = 188`` frames. The STFT follows
    librosa's conventions: a periodic window of ``win_length`` centred in ``n_fft``, frames
    centred on ``t * hop_length`` with ``n_fft // 2`` samples of reflect padding (librosa's
    default before 0.10, when OGM-GE was written; librosa >= 0.10 pads with zeros:
    ``pad_mode="constant"``). librosa's resampler (soxr/resampy) differs from ours, so
    features of audio not already at 22,050 Hz match OGM-GE's only up to resampling.
    """

    def __init__(
        self,
        sample_rate: int = 22050,
        seconds: float = 3.0,
        fit: str = "tile",
        clip: float | None = 1.0,
        n_fft: int = 512,
        hop_length: int = 353,
        win_length: int | None = None,
        window: str = "hann",
        center: bool = True,
        pad_mode: str = "reflect",
        eps: float = 1e-7,
    ) -> None:
        self.sample_rate = _positive_int("sample_rate", sample_rate)
        self.samples = _positive_int(
            "samples (seconds * sample_rate)", round(seconds * sample_rate)
        )
        self.n_fft = _positive_int("n_fft", n_fft)
        self.hop_length = _positive_int("hop_length", hop_length)
        self.win_length = (
            self.n_fft if win_length is None else _positive_int("win_length", win_length)
        )
        if fit not in FIT_MODES:
            raise ConfigError(f"unknown fit {fit!r}; expected one of {list(FIT_MODES)}")
        if window not in STFT_WINDOWS:
            raise ConfigError(f"unknown window {window!r}; expected one of {list(STFT_WINDOWS)}")
        if pad_mode not in ("reflect", "constant"):
            raise ConfigError(f"unknown pad_mode {pad_mode!r}; expected 'reflect' or 'constant'")
        if self.win_length > self.n_fft or eps <= 0 or (clip is not None and clip <= 0):
            raise ConfigError(
                f"need win_length <= n_fft, eps > 0 and clip > 0 (or None); got "
                f"win_length={self.win_length}, n_fft={self.n_fft}, eps={eps}, clip={clip}"
            )
        if not center and self.samples < self.n_fft:
            raise ConfigError(f"{self.samples} samples are fewer than n_fft={self.n_fft}")
        self.fit, self.window, self.center, self.pad_mode = fit, window, bool(center), pad_mode
        self.clip = None if clip is None else float(clip)
        self.eps = float(eps)
        self._window = STFT_WINDOWS[window](self.win_length, periodic=True, dtype=torch.float64)

    @property
    def shape(self) -> tuple[int, int]:
        """[frequency bins, frames] of every output."""
        span = self.samples if self.center else self.samples - self.n_fft
        return self.n_fft // 2 + 1, 1 + span // self.hop_length

    def params(self) -> dict[str, object]:
        """Every parameter that changes the output: what a cache key must include."""
        return {
            "sample_rate": self.sample_rate,
            "samples": self.samples,
            "fit": self.fit,
            "clip": self.clip,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "window": self.window,
            "center": self.center,
            "pad_mode": self.pad_mode,
            "eps": self.eps,
            "magnitude": "abs",
        }

    def __call__(self, wave: np.ndarray | Tensor) -> Tensor:
        """Features of one mono recording at ``sample_rate``: [n_fft // 2 + 1, frames]."""
        x = torch.from_numpy(
            np.ascontiguousarray(fit_duration(_mono(wave), self.samples, self.fit))
        )
        if self.clip is not None:
            x = x.clamp(-self.clip, self.clip)
        spec = torch.stft(
            x,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self._window,
            center=self.center,
            pad_mode=self.pad_mode,
            return_complex=True,
        )
        return torch.log(spec.abs() + self.eps).to(torch.float32)


def _kaldi_mel(f: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def kaldi_mel_banks(
    num_bins: int, padded_window: int, sample_rate: float, low_freq: float, high_freq: float
) -> Tensor:
    """Kaldi's triangular mel filters [num_bins, padded_window // 2] (``MelBanks``).

    Unlike :func:`unipair.data.audio.mel_filterbank`, triangles are linear in *mel* (not Hz),
    edges are equally spaced in ``1127 ln(1 + f/700)`` between ``low_freq`` and ``high_freq``,
    and the Nyquist bin is left out, all as in Kaldi (and ``torchaudio.compliance.kaldi``).
    A filter narrower than an FFT bin can catch none: Kaldi refuses such settings, torchaudio
    keeps the all-zero row (its channel is then constant at the log floor), and so do we, since
    the peers' recipe has one (bin 3 of 128 at 16 kHz with a 512-point FFT). Weights are exact
    (float64); Kaldi and torchaudio round them to float32 (each its own way), which moves the
    log-mel of energy near a triangle's foot by up to about 5e-4.
    """
    bins = np.arange(padded_window // 2)
    mel = _kaldi_mel(bins * sample_rate / padded_window)[None, :]
    lo_mel, hi_mel = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (hi_mel - lo_mel) / (num_bins + 1)
    left = lo_mel + np.arange(num_bins)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    return torch.from_numpy(np.clip(np.minimum(up, down), 0.0, None))


def _kaldi_window(kind: str, n: int) -> Tensor:
    """Kaldi's symmetric windows (``FeatureWindowFunction``), float64 [n]."""
    a = 2 * np.pi / (n - 1)
    i = torch.arange(n, dtype=torch.float64)
    if kind == "hanning":
        return 0.5 - 0.5 * torch.cos(a * i)
    if kind == "hamming":
        return 0.54 - 0.46 * torch.cos(a * i)
    if kind == "povey":
        return (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
    if kind == "rectangular":
        return torch.ones(n, dtype=torch.float64)
    if kind == "blackman":
        return 0.42 - 0.5 * torch.cos(a * i) + 0.08 * torch.cos(2 * a * i)
    raise ConfigError(
        f"unknown window_type {kind!r}; expected one of "
        "['blackman', 'hamming', 'hanning', 'povey', 'rectangular']"
    )


@AUDIO_FEATURES.register("fbank")
class KaldiFbank:
    """Kaldi-compatible log-mel filterbank, zero-padded or cut to ``frames``: [frames, bins].

    Defaults are the peers' call ``torchaudio.compliance.kaldi.fbank(waveform - mean,
    htk_compat=True, use_energy=False, window_type='hanning', num_mel_bins=128, dither=0,
    frame_shift=10)`` on 16 kHz audio, then pad/crop to 1,024 frames. Kaldi's remaining defaults
    are fixed: 25 ms frames that fit inside the signal (``snip_edges``), per-frame DC removal,
    pre-emphasis 0.97 (the first sample against itself), the FFT size rounded up to a power of
    two, power spectrum, ``log(max(mel, float32 eps))``, no dither (features are deterministic).

    Scale: torchaudio's users pass floats in [-1, 1], and the published normalisation
    statistics were computed on those; ``scale`` multiplies the waveform first (32768 gives
    Kaldi's int16 convention, which shifts every log-mel by ``2 ln 32768``). Padding frames are
    zeros, appended before normalisation, as in the peers' scripts. ``normalize="ks"`` applies
    ``(x - mean) / (2 * std)`` with Kinetics-Sounds statistics (MMPareto, Re-learning,
    BalanceBenchmark); explicit ``mean`` and ``std`` apply others; the default, none, is MLA's.
    ``frames=None`` keeps every frame. The default recipe's mel bin 3 catches no FFT bin and is
    constant (``log(eps)``), as in the peers' features (see :func:`kaldi_mel_banks`). A stereo
    file must be mixed to mono first (torchaudio would use its first channel only).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        num_mel_bins: int = 128,
        frames: int | None = 1024,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        window_type: str = "hanning",
        preemphasis: float = 0.97,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        remove_mean: bool = True,
        scale: float = 1.0,
        normalize: str | None = None,
        mean: float | None = None,
        std: float | None = None,
    ) -> None:
        self.sample_rate = _positive_int("sample_rate", sample_rate)
        self.num_mel_bins = _positive_int("num_mel_bins", num_mel_bins)
        self.frames = None if frames is None else _positive_int("frames", frames)
        # Kaldi's arithmetic: samp_freq * 0.001 * ms, truncated.
        self.window_size = int(self.sample_rate * 0.001 * frame_length_ms)
        self.window_shift = int(self.sample_rate * 0.001 * frame_shift_ms)
        if self.window_size < 2 or self.window_shift < 1:
            raise ConfigError(
                f"frame_length_ms={frame_length_ms} and frame_shift_ms={frame_shift_ms} give "
                f"{self.window_size}- and {self.window_shift}-sample frames at {sample_rate} Hz"
            )
        self.padded_window = 1 << (self.window_size - 1).bit_length()
        nyquist = self.sample_rate / 2
        self.low_freq = float(low_freq)
        self.high_freq = float(high_freq) if high_freq > 0 else nyquist + float(high_freq)
        if not 0.0 <= self.low_freq < self.high_freq <= nyquist:
            raise ConfigError(
                f"need 0 <= low_freq < high_freq <= {nyquist} Hz (high_freq <= 0 counts from "
                f"Nyquist), got low_freq={low_freq}, high_freq={high_freq}"
            )
        self.frame_length_ms, self.frame_shift_ms = float(frame_length_ms), float(frame_shift_ms)
        self.window_type = window_type
        self._window = _kaldi_window(window_type, self.window_size)
        self.preemphasis = float(preemphasis)
        self.remove_mean = bool(remove_mean)
        self.scale = float(scale)
        self.mean, self.std = _fbank_normalisation(normalize, mean, std)
        self._banks = kaldi_mel_banks(
            self.num_mel_bins, self.padded_window, self.sample_rate, self.low_freq, self.high_freq
        )

    @property
    def shape(self) -> tuple[int, int] | None:
        """[frames, bins] of every output, or None when ``frames=None`` (it varies)."""
        return None if self.frames is None else (self.frames, self.num_mel_bins)

    def params(self) -> dict[str, object]:
        """Every parameter that changes the output: what a cache key must include."""
        return {
            "sample_rate": self.sample_rate,
            "num_mel_bins": self.num_mel_bins,
            "frames": self.frames,
            "frame_length_ms": self.frame_length_ms,
            "frame_shift_ms": self.frame_shift_ms,
            "window_type": self.window_type,
            "preemphasis": self.preemphasis,
            "low_freq": self.low_freq,
            "high_freq": self.high_freq,
            "remove_mean": self.remove_mean,
            "scale": self.scale,
            "mean": self.mean,
            "std": self.std,
            "dither": 0.0,
            "snip_edges": True,
            "remove_dc_offset": True,
            "round_to_power_of_two": True,
            "power": 2.0,
            "log_floor": FLOAT_EPS,
            "pad_value": 0.0,
        }

    def fbank(self, wave: np.ndarray | Tensor) -> Tensor:
        """Kaldi's log-mel frames [1 + (T - window) // shift, bins] (float64), before
        padding and normalisation."""
        x = torch.from_numpy(_mono(wave))
        if x.numel() < self.window_size:
            raise DataFormatError(
                f"a waveform of {x.numel()} samples is shorter than one "
                f"{self.frame_length_ms:g} ms frame ({self.window_size} samples at "
                f"{self.sample_rate} Hz)"
            )
        if self.remove_mean:
            x = x - x.mean()
        frames = (x * self.scale).unfold(0, self.window_size, self.window_shift)
        frames = frames - frames.mean(dim=1, keepdim=True)  # remove_dc_offset
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = (frames - self.preemphasis * previous) * self._window
        spec = torch.fft.rfft(frames, n=self.padded_window)[:, : self.padded_window // 2]
        power = spec.real.square() + spec.imag.square()
        return torch.log(torch.clamp(power @ self._banks.T, min=FLOAT_EPS))

    def __call__(self, wave: np.ndarray | Tensor) -> Tensor:
        """Features of one mono recording at ``sample_rate``: [frames, num_mel_bins]."""
        feats = self.fbank(wave)
        if self.frames is not None:
            feats = feats[: self.frames]
            feats = torch.nn.functional.pad(feats, (0, 0, 0, self.frames - feats.shape[0]))
        if self.mean is not None and self.std is not None:
            feats = (feats - self.mean) / (2 * self.std)
        return feats.to(torch.float32)


def _fbank_normalisation(
    normalize: str | None, mean: float | None, std: float | None
) -> tuple[float | None, float | None]:
    """(mean, std) of ``(x - mean) / (2 * std)``, or (None, None) for raw log-mels."""
    if normalize is not None and (mean is not None or std is not None):
        raise ConfigError("give either normalize or mean and std, not both")
    if normalize == "ks":
        return KS_FBANK_MEAN, KS_FBANK_STD
    if normalize is not None:
        raise ConfigError(f"unknown normalize {normalize!r}; expected None or 'ks'")
    if (mean is None) != (std is None):
        raise ConfigError(f"mean and std go together, got mean={mean}, std={std}")
    if std is not None and std <= 0:
        raise ConfigError(f"std must be positive, got {std}")
    return (None, None) if mean is None else (float(mean), float(std))


def create_audio_features(name: str, **options: Any) -> AudioFeatures:
    """Build a registered feature from config options, e.g. ``("fbank", frames=1024)``."""
    factory = AUDIO_FEATURES.get(name)
    accepted = inspect.signature(factory).parameters
    for key in options:
        if key not in accepted:
            raise ConfigError(
                f"audio features {name!r}: unknown option {key!r}; expected one of "
                f"{sorted(accepted)}"
            )
    return factory(**options)


def list_audio_features() -> list[str]:
    return AUDIO_FEATURES.names()
