"""Media audio on real FSDD recordings: readers (soundfile, PyAV), fit_duration, features.

References are independent of the code under test: soundfile's own decoding, the wav a
lossy file was encoded from, a numpy STFT written out here, and kaldi-native-fbank (Kaldi's
C++ feature code) for the fbank.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import get_window

from unipair.data.audio import LogMel as AudioLogMel
from unipair.data.audio import read_wav
from unipair.data.media.audio import fit_duration, read_audio
from unipair.data.media.features import (
    KS_FBANK_MEAN,
    KS_FBANK_STD,
    KaldiFbank,
    LogMel,
    LogSTFT,
    create_audio_features,
    list_audio_features,
)
from unipair.errors import (
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    UnipairError,
    UnknownNameError,
)

torch.set_num_threads(1)
FLOAT_EPS_LOG = float(np.log(np.finfo(np.float32).eps))


@pytest.fixture(scope="module")
def recordings(fsdd_root: Path) -> list[Path]:
    """Ten recordings spread over speakers and digits (every 300th file by name)."""
    files = sorted(fsdd_root.glob("*.wav"))
    if not files:
        pytest.skip(f"no FSDD recordings under {fsdd_root}")
    return files[::300][:10]


@pytest.fixture(scope="module")
def av() -> ModuleType:
    return pytest.importorskip("av", reason="PyAV (the 'media' extra) is not installed")


def encode_av(
    av: ModuleType,
    path: Path,
    wave: np.ndarray,
    rate: int,
    fmt: str,
    acodec: str | None,
    vcodec: str,
) -> None:
    """A real audio-visual file: a few tiny video frames and (unless ``acodec`` is None) the
    mono ``wave`` in ``acodec``."""
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(vcodec, rate=5)
        video.width = video.height = 32
        video.pix_fmt = "yuv420p"
        audio = None
        if acodec is not None:
            audio = out.add_stream(acodec, rate=rate)
            audio.layout = "mono"
        for i in range(4):
            image = np.full((32, 32, 3), 50 * i, dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        out.mux(video.encode())
        if audio is not None:
            frame = av.AudioFrame.from_ndarray(wave[None, :].astype(np.float32), "flt", "mono")
            frame.sample_rate = rate
            frame.pts = 0
            out.mux(audio.encode(frame))
            out.mux(audio.encode())


def aligned(decoded: np.ndarray, source: np.ndarray, max_lag: int = 3000) -> np.ndarray:
    """``decoded`` shifted by the codec's delay (the lag that best matches ``source``), cut to
    the source's length; lossy encoders prepend up to a few thousand samples of priming."""
    n = len(source) - max_lag
    lag = max(range(max_lag), key=lambda k: float(np.dot(decoded[k : k + n], source[:n])))
    out = decoded[lag : lag + len(source)]
    return np.pad(out, (0, len(source) - len(out)))


def snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((estimate - reference) ** 2)))


# ------------------------------------------------------------------------- soundfile


def test_wav_is_read_exactly_as_soundfile_decodes_it(recordings: list[Path]) -> None:
    for path in recordings:
        ref, rate = sf.read(path, dtype="float32")
        wave = read_audio(path)
        assert rate == 8000 and wave.dtype == np.float32 and wave.shape == ref.shape
        np.testing.assert_array_equal(wave, ref)
        assert 0.01 < np.abs(wave).max() <= 1.0
        assert read_audio(path, mono=False).shape == (1, len(ref))


def test_resampling_8k_to_16k_and_22050_matches_read_wav(recordings: list[Path]) -> None:
    for path in recordings[:4]:
        n = sf.info(str(path)).frames
        up = read_audio(path, rate=16000)
        assert up.shape == (2 * n,)
        np.testing.assert_array_equal(up, read_wav(path, target_rate=16000))
        assert read_audio(path, rate=22050).shape == (-(-n * 441 // 160),)
        assert read_audio(path, rate=8000).shape == (n,)


def test_stereo_flac_mixes_to_the_channel_mean(recordings: list[Path], tmp_path: Path) -> None:
    x = read_audio(recordings[0])
    stereo = np.stack([x, -0.5 * x], axis=1)
    path = tmp_path / "stereo.FLAC"  # extension matched case-insensitively
    sf.write(path, stereo, 8000, subtype="PCM_24")
    both = read_audio(path, mono=False)
    assert both.shape == (2, len(x))
    np.testing.assert_allclose(both[0], x, atol=1e-6)
    np.testing.assert_allclose(read_audio(path), 0.25 * x, atol=1e-6)


# ------------------------------------------------------------------------------ PyAV


@pytest.mark.parametrize(
    ("name", "fmt", "acodec", "vcodec"),
    [("clip.mp4", "mp4", "aac", "libx264"), ("clip.flv", "flv", "libmp3lame", "flv")],
)
def test_audio_track_of_a_video_file_matches_its_wav(
    av: ModuleType,
    recordings: list[Path],
    tmp_path: Path,
    name: str,
    fmt: str,
    acodec: str,
    vcodec: str,
) -> None:
    for path in recordings[:3]:
        source = read_audio(path, rate=22050)
        media = tmp_path / name
        encode_av(av, media, source, 22050, fmt, acodec, vcodec)
        with av.open(str(media)) as container:
            assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
        decoded = read_audio(media)
        assert decoded.dtype == np.float32 and decoded.ndim == 1
        assert len(source) <= len(decoded) < len(source) + 4096
        same = aligned(decoded, source)
        assert np.corrcoef(same, source)[0, 1] > 0.99
        assert snr_db(same, source) > 15.0
        # resampled on the way out, the track matches the original 8 kHz recording
        original = read_audio(path)
        back = aligned(read_audio(media, rate=8000), original, max_lag=1500)
        assert np.corrcoef(back, original)[0, 1] > 0.98


def test_both_backends_decode_a_wav_identically(av: ModuleType, recordings: list[Path]) -> None:
    for path in recordings[:3]:
        np.testing.assert_array_equal(
            read_audio(path, rate=16000, backend="av"), read_audio(path, rate=16000)
        )


def test_missing_pyav_names_the_extra(
    recordings: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'unipair\[media\]'"):
        read_audio(media)
    with pytest.raises(ImportError, match=recordings[0].name):
        read_audio(recordings[0], backend="av")


def test_importing_the_media_modules_does_not_import_pyav() -> None:
    code = (
        "import sys, unipair.data.media.audio, unipair.data.media.features\n"
        "assert 'av' not in sys.modules, 'av imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------- errors


def _error_of(path: Path, **kwargs: object) -> UnipairError:
    with pytest.raises(UnipairError) as info:
        read_audio(path, **kwargs)
    assert str(path) in str(info.value)
    return info.value


def test_missing_text_and_empty_files_are_clear_errors(tmp_path: Path) -> None:
    assert isinstance(_error_of(tmp_path / "nowhere.wav"), DataNotFoundError)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    assert isinstance(_error_of(text), DataFormatError)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), 8000)
    error = _error_of(empty)
    assert isinstance(error, DataFormatError) and "decodes to no samples" in str(error)
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    assert "NaN" in str(_error_of(nan))
    odd = tmp_path / "clip.xyz"
    odd.write_bytes(b"\0")
    assert "backend=" in str(_error_of(odd))
    with pytest.raises(ConfigError, match="rate"):
        read_audio(text, rate=0)
    with pytest.raises(ConfigError, match="backend"):
        read_audio(text, backend="ffmpeg")  # type: ignore[arg-type]


def test_video_without_audio_and_corrupt_media_are_clear_errors(
    av: ModuleType, recordings: list[Path], tmp_path: Path
) -> None:
    silent = tmp_path / "silent.mp4"
    encode_av(av, silent, np.zeros(0), 22050, "mp4", None, "libx264")
    error = _error_of(silent)
    assert isinstance(error, DataFormatError) and "holds no audio stream" in str(error)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video at all\n")
    assert isinstance(_error_of(broken), DataFormatError)
    truncated = tmp_path / "truncated.flv"
    encode_av(
        av, truncated, read_audio(recordings[0], rate=22050), 22050, "flv", "libmp3lame", "flv"
    )
    truncated.write_bytes(truncated.read_bytes()[:40])
    assert isinstance(_error_of(truncated), DataFormatError)


# ---------------------------------------------------------------------- fit_duration


@settings(max_examples=150, deadline=None)
@given(
    length=st.integers(1, 120),
    samples=st.integers(1, 300),
    channels=st.sampled_from([None, 2]),
)
def test_fit_duration_modes(length: int, samples: int, channels: int | None) -> None:
    rng = np.random.default_rng(length * 1000 + samples)
    shape = (length,) if channels is None else (channels, length)
    wave = rng.uniform(-1, 1, size=shape).astype(np.float32)
    keep = min(length, samples)
    for mode in ("pad", "crop", "tile"):
        out = fit_duration(wave, samples, mode)
        assert out.shape == (*shape[:-1], samples) and out.dtype == np.float32
    pad = fit_duration(wave, samples, "pad")
    np.testing.assert_array_equal(pad[..., :keep], wave[..., :keep])
    assert not pad[..., keep:].any()
    crop = fit_duration(wave, samples, "crop")
    start = max(0, (length - samples) // 2)
    np.testing.assert_array_equal(crop[..., :keep], wave[..., start : start + keep])
    assert not crop[..., keep:].any()
    tile = fit_duration(wave, samples, "tile")
    np.testing.assert_array_equal(tile, wave[..., np.arange(samples) % length])
    if 3 * length >= samples:  # OGM-GE's fixed three copies suffice
        np.testing.assert_array_equal(
            tile, np.tile(wave, (*[1] * (wave.ndim - 1), 3))[..., :samples]
        )


def test_fit_duration_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="mode"):
        fit_duration(np.ones(4), 4, "stretch")
    with pytest.raises(ConfigError, match="samples"):
        fit_duration(np.ones(4), 0)
    with pytest.raises(DataFormatError, match="empty"):
        fit_duration(np.ones(0), 4)


# --------------------------------------------------------------------------- LogSTFT


def numpy_log_stft(
    x: np.ndarray,
    n_fft: int = 512,
    hop: int = 353,
    win_length: int | None = None,
    window: str = "hann",
    center: bool = True,
    pad_mode: str = "reflect",
    eps: float = 1e-7,
) -> np.ndarray:
    """librosa.stft's conventions written out in numpy: periodic window centred in n_fft,
    n_fft // 2 samples of padding each side, frame t starting at t * hop."""
    win_length = win_length or n_fft
    w = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    w[left : left + win_length] = get_window(window, win_length, fftbins=True)
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = np.pad(x, n_fft // 2, mode=pad_mode)
    frames = 1 + (len(x) - n_fft) // hop
    stack = np.stack([x[t * hop : t * hop + n_fft] * w for t in range(frames)], axis=1)
    return np.log(np.abs(np.fft.rfft(stack, axis=0)) + eps)


def test_log_stft_is_ogm_ge_recipe(recordings: list[Path]) -> None:
    feats = LogSTFT()
    assert 1 + 66150 // 353 == 188
    assert feats.shape == (257, 188)
    for path in recordings[:4]:
        x = read_audio(path, rate=22050)
        out = feats(x)
        assert out.shape == (257, 188) and out.dtype == torch.float32
        tiled = np.clip(np.tile(x, 66150 // len(x) + 1)[:66150], -1, 1)
        np.testing.assert_allclose(out.numpy(), numpy_log_stft(tiled), atol=1e-4)
    # clipping to [-1, 1] happens before the STFT
    loud = 4.0 * read_audio(recordings[0], rate=22050)
    clipped = np.clip(np.tile(loud, 66150 // len(loud) + 1)[:66150], -1, 1)
    np.testing.assert_allclose(LogSTFT()(loud).numpy(), numpy_log_stft(clipped), atol=1e-4)


def test_log_stft_options_follow_the_same_conventions(recordings: list[Path]) -> None:
    x = read_audio(recordings[1], rate=16000)
    feats = LogSTFT(
        sample_rate=16000,
        seconds=1.0,
        fit="pad",
        n_fft=512,
        hop_length=160,
        win_length=400,
        window="hamming",
        center=True,
        pad_mode="constant",
    )
    ref = numpy_log_stft(fit_duration(x, 16000, "pad"), 512, 160, 400, "hamming", True, "constant")
    assert feats.shape == ref.shape == (257, 101)
    np.testing.assert_allclose(feats(x).numpy(), ref, atol=1e-4)
    nocentre = LogSTFT(sample_rate=16000, seconds=1.0, fit="crop", center=False, clip=None)
    ref = numpy_log_stft(fit_duration(x, 16000, "crop"), 512, 353, center=False)
    assert nocentre.shape == ref.shape
    np.testing.assert_allclose(nocentre(x).numpy(), ref, atol=1e-4)


# ------------------------------------------------------------------------ KaldiFbank


def knf_fbank(
    knf: ModuleType,
    x: np.ndarray,
    bins: int,
    frame_length_ms: float = 25.0,
    window: str = "hanning",
) -> np.ndarray:
    """kaldi-native-fbank with the peers' settings (16 kHz, 10 ms shift, no dither/energy)."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.frame_opts.frame_shift_ms = 10.0
    opts.frame_opts.frame_length_ms = frame_length_ms
    opts.mel_opts.num_bins = bins
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.use_energy = False
    opts.htk_compat = True
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, x.astype(np.float32).tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


def synthetic_signals() -> dict[str, np.ndarray]:
    """Two seconds at 16 kHz, in [-1, 1]; each with a noise floor, so that no mel bin sits
    beyond what float32 (kaldi-native-fbank's precision) resolves."""
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    floor = 1e-3 * rng.standard_normal(t.size)
    return {
        "white": 0.1 * rng.standard_normal(t.size),
        "chirp": 0.5 * np.sin(2 * np.pi * (50 * t + 1950 * t**2)) + floor,
        "chord": 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + floor,
        "tremolo": (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 0.3 * rng.standard_normal(t.size),
    }


# (bins, frame length ms, window): Kaldi refuses the recipe's 128 bins with 25 ms frames at
# 16 kHz (one filter catches no FFT bin), so 128 bins are checked with 40 ms frames.
KNF_SETTINGS = [(126, 25.0, "hanning"), (128, 40.0, "hanning"), (80, 25.0, "povey"),
                (40, 25.0, "hamming")]  # fmt: skip


@pytest.mark.parametrize("scale", [1.0, 32768.0], ids=["float", "int16"])
@pytest.mark.parametrize(("bins", "frame_length_ms", "window"), KNF_SETTINGS)
def test_kaldi_fbank_matches_kaldi_native_fbank(
    recordings: list[Path], scale: float, bins: int, frame_length_ms: float, window: str
) -> None:
    """Frame by frame on real 16 kHz speech and synthetic signals. kaldi-native-fbank takes the
    samples as given: it sees ``scale * x`` (Kaldi's own convention is int16 values), ours
    sees ``x`` in [-1, 1] with ``scale``. Kaldi computes in float32 (FFT and mel weights), so
    its round-off grows with an entry's depth below its frame's loudest bin: entries within
    12 nats (52 dB) of it agree to 1e-3 (measured up to 6e-4), deeper ones (the resampled
    FSDD audio has an empty 4-8 kHz band) to 0.1 (measured up to 0.063, 25+ nats deep)."""
    knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank is not installed")
    feats = KaldiFbank(
        num_mel_bins=bins,
        frames=None,
        frame_length_ms=frame_length_ms,
        window_type=window,
        scale=scale,
    )
    waves = [read_audio(p, rate=16000) for p in recordings]
    for x in [*waves, *synthetic_signals().values()]:
        ref = knf_fbank(knf, scale * (x - x.mean()), bins, frame_length_ms, window)
        ours = feats(x).numpy()
        assert ours.shape == ref.shape == (1 + (len(x) - feats.window_size) // 160, bins)
        diff = np.abs(ours - ref)
        loud = ref >= ref.max(axis=1, keepdims=True) - 12.0
        assert diff[loud].max() < 1e-3
        assert diff.max() < 0.1


def test_kaldi_fbank_recipe_pads_crops_and_normalises(recordings: list[Path]) -> None:
    feats = KaldiFbank()
    assert feats.shape == (1024, 128) and (feats.window_size, feats.window_shift) == (400, 160)
    x = read_audio(recordings[0], rate=16000)
    raw = feats.fbank(x).to(torch.float32)
    n = 1 + (len(x) - 400) // 160
    assert raw.shape == (n, 128) and n < 1024
    out = feats(x)
    assert out.shape == (1024, 128) and out.dtype == torch.float32
    torch.testing.assert_close(out[:n], raw)
    assert not out[n:].any()  # zero padding, as the peers' ZeroPad2d
    # bin 3 catches no FFT bin at 16 kHz / 512 points: constant log floor, as in torchaudio
    assert torch.all(raw[:, 3] == FLOAT_EPS_LOG) and torch.all(raw[:, 2] > FLOAT_EPS_LOG)
    ks = KaldiFbank(normalize="ks")(x)
    torch.testing.assert_close(ks, (out - KS_FBANK_MEAN) / (2 * KS_FBANK_STD))
    assert torch.allclose(ks[n:], torch.tensor(4.503877 / 10.282552))
    own = KaldiFbank(mean=-5.081, std=4.4849)(x)
    torch.testing.assert_close(own, (out + 5.081) / (2 * 4.4849))
    long = np.tile(x, -(-12 * 16000 // len(x)))  # 12 s: 1,198 frames, the first 1,024 kept
    torch.testing.assert_close(feats(long), feats.fbank(long)[:1024].to(torch.float32))
    # the waveform's mean is removed first (a DC offset changes nothing)
    torch.testing.assert_close(feats(x.astype(np.float64) + 0.05), out, atol=1e-4, rtol=0)


def test_kaldi_fbank_rejects_bad_input_and_options() -> None:
    with pytest.raises(DataFormatError, match="shorter than one 25 ms frame"):
        KaldiFbank()(np.zeros(399, dtype=np.float32))
    with pytest.raises(DataFormatError, match="mono"):
        KaldiFbank()(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ConfigError, match="not both"):
        KaldiFbank(normalize="ks", mean=1.0, std=1.0)
    with pytest.raises(ConfigError, match="together"):
        KaldiFbank(mean=1.0)
    with pytest.raises(ConfigError, match="normalize"):
        KaldiFbank(normalize="audioset")
    with pytest.raises(ConfigError, match="window_type"):
        KaldiFbank(window_type="hann")
    with pytest.raises(ConfigError, match="high_freq"):
        KaldiFbank(high_freq=9000.0)


# -------------------------------------------------------------------------- registry


def test_registry_builds_each_feature_from_a_config() -> None:
    assert list_audio_features() == ["fbank", "logmel", "stft_ogm"]
    config = {"kind": "fbank", "frames": 512, "normalize": "ks"}
    fbank = create_audio_features(config.pop("kind"), **config)
    assert isinstance(fbank, KaldiFbank) and fbank.shape == (512, 128)
    assert fbank.params()["mean"] == KS_FBANK_MEAN
    assert create_audio_features("stft_ogm").params() == LogSTFT().params()
    logmel = create_audio_features("logmel", n_mels=40)
    assert LogMel is AudioLogMel and logmel.params() == AudioLogMel().params()
    assert KaldiFbank(frames=512).params() != KaldiFbank().params()
    assert LogSTFT(pad_mode="constant").params() != LogSTFT().params()
    with pytest.raises(ConfigError, match="'frame'"):
        create_audio_features("fbank", frame=1024)
    with pytest.raises(UnknownNameError, match="fbank"):
        create_audio_features("fbanks")
    with pytest.raises(ConfigError, match="frames"):
        create_audio_features("fbank", frames=0)
