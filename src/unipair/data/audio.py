"""Audio front end: WAV reading and a log-mel spectrogram built from ``torch.stft``.

Everything is computed here (our own mel filterbank, no torchaudio/librosa) so the features are
identical wherever unipair runs and depend only on torch, numpy, scipy and soundfile. Recordings
of different lengths become one fixed-size image [1, n_mels, frames]: short ones are zero-padded
at the end (padded frames sit at the log floor ``log(eps)``), long ones are cropped around their
centre, so a batch of waveforms turns into one tensor with a single vectorised STFT.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly
from torch import Tensor

from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["LogMel", "hz_to_mel", "mel_filterbank", "mel_to_hz", "read_wav"]

MEL_SCALES = ("htk", "slaney")


def read_wav(path: str | Path, target_rate: int = 8000, data: bytes | None = None) -> np.ndarray:
    """A mono float32 waveform in [-1, 1] at ``target_rate``.

    Channels are averaged; another sample rate is resampled with a polyphase filter. ``data``
    decodes bytes already read from ``path`` (the caller hashed them), so files are read once;
    ``path`` then only names the file in errors. Any decoding failure is a ValueError naming the
    file, so one bad recording among thousands is easy to find.
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise DataNotFoundError(f"audio file {path} does not exist")
    try:
        wave, rate = sf.read(
            io.BytesIO(data) if data is not None else path, dtype="float32", always_2d=True
        )
    except (RuntimeError, TypeError, ValueError, EOFError) as e:  # LibsndfileError: RuntimeError
        raise DataFormatError(f"cannot read audio file {path}: {e}") from None
    if wave.shape[0] == 0:
        raise DataFormatError(f"audio file {path} holds no samples")
    mono = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if not np.all(np.isfinite(mono)):
        raise DataFormatError(f"audio file {path} contains NaN or infinite samples")
    if rate != target_rate:
        g = math.gcd(int(rate), int(target_rate))
        mono = resample_poly(mono, target_rate // g, int(rate) // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def hz_to_mel(f: np.ndarray | float, scale: str = "htk") -> np.ndarray:
    """Hz to mel. HTK: ``2595 log10(1 + f/700)``; Slaney: linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale == "slaney":
        lin = f / (200.0 / 3.0)
        logstep = math.log(6.4) / 27.0
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)
    raise ConfigError(f"unknown mel scale {scale!r}; expected one of {list(MEL_SCALES)}")


def mel_to_hz(m: np.ndarray | float, scale: str = "htk") -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale == "slaney":
        logstep = math.log(6.4) / 27.0
        return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3.0))
    raise ConfigError(f"unknown mel scale {scale!r}; expected one of {list(MEL_SCALES)}")


def mel_filterbank(
    n_freqs: int,
    n_mels: int,
    sample_rate: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    scale: str = "htk",
) -> Tensor:
    """Triangular filters [n_mels, n_freqs] over the rfft bins, each peaking at 1 at its centre.

    Centres are equally spaced in mel between ``fmin`` and ``fmax``. Peak (not area)
    normalisation keeps neighbouring triangles summing to exactly 1 between the first and the
    last centre, a property the tests check. A filter that catches no FFT bin would give a
    constant channel, so that is an error (too many mels for the FFT size).
    """
    nyquist = sample_rate / 2.0
    fmax = nyquist if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= nyquist:
        raise ConfigError(f"need 0 <= fmin < fmax <= {nyquist} Hz, got fmin={fmin}, fmax={fmax}")
    if n_mels < 1 or n_freqs < 2:
        raise ConfigError(f"need n_mels >= 1 and n_freqs >= 2, got {n_mels} and {n_freqs}")
    freqs = np.linspace(0.0, nyquist, n_freqs)
    edges = mel_to_hz(
        np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2), scale
    )
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lo) / (mid - lo)
    falling = (hi - freqs[None, :]) / (hi - mid)
    fb = np.clip(np.minimum(rising, falling), 0.0, None)
    empty = np.flatnonzero(fb.max(axis=1) <= 0.0)
    if empty.size:
        raise ConfigError(
            f"mel filter(s) {empty.tolist()} cover no FFT bin: {n_mels} mels are too many for "
            f"{n_freqs} frequency bins between {fmin} and {fmax} Hz"
        )
    return torch.from_numpy(fb.astype(np.float32))


class LogMel:
    """``log(mel power + eps)`` of fixed shape [1, n_mels, frames]; call on one wave or a batch.

    Frame ``t`` of a recording is centred on sample ``t * hop_length`` (torch's ``center=True``
    convention with zero padding), so a recording of L samples has ``1 + L // hop_length`` own
    frames. Features of a recording never depend on the other recordings in its batch.
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        n_fft: int = 256,
        hop_length: int = 80,
        n_mels: int = 40,
        frames: int = 100,
        fmin: float = 0.0,
        fmax: float | None = None,
        eps: float = 1e-6,
        mel_scale: str = "htk",
    ) -> None:
        if n_fft < 2 or hop_length < 1 or frames < 1 or eps <= 0:
            raise ConfigError(
                f"need n_fft >= 2, hop_length >= 1, frames >= 1, eps > 0; got {n_fft}, "
                f"{hop_length}, {frames}, {eps}"
            )
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        self.frames = int(frames)
        self.fmin = float(fmin)
        self.fmax = float(sample_rate / 2.0 if fmax is None else fmax)
        self.eps = float(eps)
        self.mel_scale = mel_scale
        self.filterbank = mel_filterbank(
            n_fft // 2 + 1, n_mels, sample_rate, self.fmin, self.fmax, mel_scale
        )
        self.window = torch.hann_window(n_fft, periodic=True)

    def params(self) -> dict[str, object]:
        """Every parameter that changes the output: what a cache key must include."""
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "win_length": self.n_fft,
            "window": "hann",
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "frames": self.frames,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "eps": self.eps,
            "mel_scale": self.mel_scale,
            "power": 2.0,
        }

    @property
    def span(self) -> int:
        """Samples seen by ``frames`` frames: the fixed waveform window cut per recording."""
        return (self.frames - 1) * self.hop_length + self.n_fft

    def _window_of(self, wave: np.ndarray, out: np.ndarray) -> None:
        """Copy the samples under the kept frames into ``out`` (zeros outside the recording)."""
        own = 1 + len(wave) // self.hop_length
        first = max(0, (own - self.frames) // 2)  # centre crop when too long, else frame 0
        start = first * self.hop_length - self.n_fft // 2
        a, b = max(start, 0), min(start + self.span, len(wave))
        out[:] = 0.0
        if b > a:
            out[a - start : b - start] = wave[a:b]

    def batch(self, waves: Sequence[np.ndarray | Tensor], chunk: int = 256) -> Tensor:
        """Features of many recordings [N, 1, n_mels, frames]; one STFT per ``chunk`` of them."""
        out = torch.empty(len(waves), 1, self.n_mels, self.frames)
        buf = np.zeros((chunk, self.span), dtype=np.float32)
        for s in range(0, len(waves), chunk):
            part = waves[s : s + chunk]
            for i, w in enumerate(part):
                w = w.detach().cpu().numpy() if isinstance(w, Tensor) else np.asarray(w)
                if w.ndim != 1:
                    raise ValueError(f"expected 1-D waveforms, got shape {tuple(w.shape)}")
                self._window_of(w.astype(np.float32, copy=False), buf[i])
            out[s : s + len(part), 0] = self._features(torch.from_numpy(buf[: len(part)]))
        return out

    def __call__(self, wave: np.ndarray | Tensor) -> Tensor:
        """Features of one recording [1, n_mels, frames]."""
        return self.batch([wave])[0]

    def _features(self, x: Tensor) -> Tensor:
        spec = torch.stft(
            x,
            self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=self.window,
            center=False,
            return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()  # [B, n_freqs, frames]
        return torch.log(torch.matmul(self.filterbank, power) + self.eps)
