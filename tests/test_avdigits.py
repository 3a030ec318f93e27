"""avdigits (FSDD audio + MNIST images) on the real data, plus its audio and IDX readers.

Labels and pixels are checked against an independent parse of the MNIST files (plain gzip +
numpy, not ``read_idx``) and file names, so a pairing bug cannot hide behind the reader.
"""

from __future__ import annotations

import gzip
import math
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from unipair.data.audio import LogMel, mel_filterbank, read_wav
from unipair.data.avdigits import AVDigitsArrays, load_avdigits, read_avdigits
from unipair.data.idx import IdxFormatError, read_idx
from unipair.data.registry import create, list_datasets

torch.set_num_threads(1)
SR = 8000
NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$")


# ---------------------------------------------------------------- independent references


def htk_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def htk_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_centres(n_mels: int, fmax: float = SR / 2) -> np.ndarray:
    return htk_hz(np.linspace(0.0, htk_mel(fmax), n_mels + 2))[1:-1]


def raw_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    img = gzip.decompress((root / "t10k-images-idx3-ubyte.gz").read_bytes())
    lab = gzip.decompress((root / "t10k-labels-idx1-ubyte.gz").read_bytes())
    images = np.frombuffer(img, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    return images, np.frombuffer(lab, dtype=np.uint8, offset=8).astype(np.int64)


def reference_logmel(wave: np.ndarray, n_mels: int = 40) -> torch.Tensor:
    """torch's own centred STFT (zero padding): frames [n_mels, 1 + L // 80]."""
    spec = torch.stft(
        torch.from_numpy(wave.astype(np.float32)),
        256,
        hop_length=80,
        window=torch.hann_window(256),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return torch.log(mel_filterbank(129, n_mels, SR) @ spec.abs().square() + 1e-6)


def tone(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ---------------------------------------------------------------- mel filterbank and LogMel


def slaney_centres(n_mels: int, fmax: float = SR / 2) -> np.ndarray:
    """Slaney (Auditory Toolbox): 200/3 Hz per mel below 1 kHz, 27 mels per factor 6.4 above."""
    step = np.log(6.4) / 27.0
    top = 15.0 + np.log(fmax / 1000.0) / step
    m = np.linspace(0.0, top, n_mels + 2)[1:-1]
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp(step * (m - 15.0)))


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_filterbank_is_a_partition_of_unity_between_first_and_last_centre(scale: str) -> None:
    fb = mel_filterbank(129, 40, SR, scale=scale).numpy()
    assert fb.shape == (40, 129) and fb.min() >= 0.0 and fb.max() <= 1.0 + 1e-6
    centres = mel_centres(40) if scale == "htk" else slaney_centres(40)
    freqs = np.linspace(0, SR / 2, 129)
    for row, centre in zip(fb, centres, strict=True):  # each triangle peaks at its centre
        assert row.argmax() == int(np.argmin(np.abs(freqs - centre)))
    inside = (freqs >= centres[0]) & (freqs <= centres[-1])
    np.testing.assert_allclose(fb.sum(axis=0)[inside], 1.0, atol=1e-5)
    assert fb.sum(axis=0)[freqs < centres[0]].max() < 1.0


def test_htk_triangles_fall_linearly_in_hz_between_neighbouring_centres() -> None:
    c = mel_centres(40)
    freqs = np.linspace(0, SR / 2, 129)
    fb = mel_filterbank(129, 40, SR).numpy()
    for k in (5, 20, 35):
        between = np.flatnonzero((freqs >= c[k]) & (freqs <= c[k + 1]))
        assert between.size
        falling = (c[k + 1] - freqs[between]) / (c[k + 1] - c[k])
        np.testing.assert_allclose(fb[k, between], falling, atol=1e-5)
        np.testing.assert_allclose(fb[k + 1, between], 1 - falling, atol=1e-5)


def test_too_many_mels_for_the_fft_is_an_error() -> None:
    with pytest.raises(ValueError, match="cover no FFT bin"):
        mel_filterbank(129, 128, SR)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_pure_tone_energy_lands_in_the_mel_bin_of_its_frequency(freq: float) -> None:
    x = LogMel()(tone(freq, 0.5))
    assert x.shape == (1, 40, 100)
    energy = x[0, :, 5:40].mean(dim=1)  # frames well inside the 0.5 s tone
    assert int(energy.argmax()) == int(np.argmin(np.abs(mel_centres(40) - freq)))


def test_short_recording_matches_torch_stft_and_pads_to_the_log_floor() -> None:
    wave = np.random.default_rng(0).standard_normal(2345).astype(np.float32) * 0.1
    x = LogMel()(wave)[0]
    ref = reference_logmel(wave)
    own = 1 + len(wave) // 80
    torch.testing.assert_close(x[:, :own], ref, atol=1e-3, rtol=1e-4)
    silent = (len(wave) + 128) // 80 + 1  # first frame whose window holds no sample
    assert torch.all(x[:, silent:] == math.log(1e-6))


def test_long_recording_is_centre_cropped() -> None:
    wave = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    x = LogMel()(wave)[0]
    ref = reference_logmel(wave)  # 201 frames
    first = (ref.shape[1] - 100) // 2
    torch.testing.assert_close(x, ref[:, first : first + 100], atol=1e-3, rtol=1e-4)


def test_features_do_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(2)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (900, 12000, 3000)]
    mel = LogMel(n_mels=32, frames=50)
    batch = mel.batch(waves, chunk=2)
    assert batch.shape == (3, 1, 32, 50)
    for w, b in zip(waves, batch, strict=True):
        torch.testing.assert_close(mel(w), b)


# ---------------------------------------------------------------- read_wav


def test_read_wav_downmixes_and_resamples(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    left = 0.4 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo16k.wav"
    sf.write(path, np.stack([left, np.zeros_like(left)], axis=1), 16000, subtype="PCM_16")
    x = read_wav(path, 8000)
    assert x.dtype == np.float32 and x.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(x))
    assert np.argmax(spectrum) == 440  # 1 s at 8 kHz: bin k is k Hz
    assert np.max(np.abs(x[100:-100])) == pytest.approx(0.2, abs=0.01)  # mean of the channels


def test_read_wav_names_a_corrupt_or_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "0_x_0.wav"
    bad.write_bytes(b"RIFF\x00\x01garbage" * 10)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        read_wav(bad)
    with pytest.raises(FileNotFoundError, match=re.escape("nope.wav")):
        read_wav(tmp_path / "nope.wav")


# ---------------------------------------------------------------- IDX reader


def write_idx(path: Path, arr: np.ndarray, code: int, compress: bool = False) -> None:
    be = arr.astype(arr.dtype.newbyteorder(">"))
    blob = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    blob += be.tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    ints = np.arange(-12, 12, dtype=np.int32).reshape(2, 3, 4)
    write_idx(tmp_path / "a.idx", ints, 0x0C, compress)
    got = read_idx(tmp_path / "a.idx", ndim=3)
    np.testing.assert_array_equal(got, ints)
    assert got.dtype == np.dtype("=i4") and got.flags.writeable
    floats = np.linspace(0, 1, 5).astype(np.float64)
    write_idx(tmp_path / "f.idx", floats, 0x0E, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)


def test_idx_errors_name_the_file(tmp_path: Path) -> None:
    good = np.zeros((3, 2, 2), dtype=np.uint8)
    p = tmp_path / "bad-magic.idx"
    p.write_bytes(b"\x01\x00\x08\x03" + b"\x00" * 24)
    with pytest.raises(IdxFormatError, match=r"bad-magic.idx.*magic"):
        read_idx(p)
    p = tmp_path / "short.idx"
    write_idx(p, good, 0x08)
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(IdxFormatError, match=r"short.idx.*11 bytes"):
        read_idx(p)
    p = tmp_path / "dims.idx"
    write_idx(p, good, 0x08)
    with pytest.raises(IdxFormatError, match=r"dims.idx.*expected 1 dimensions"):
        read_idx(p, ndim=1)
    with pytest.raises(IdxFormatError, match=r"dims.idx.*type"):
        read_idx(p, dtype="f4")
    p = tmp_path / "broken.idx.gz"
    payload = np.random.default_rng(0).bytes(4000)  # incompressible: truncation cuts the stream
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 4000) + payload)[:2000])
    with pytest.raises(IdxFormatError, match=r"broken.idx.gz.*gzip"):
        read_idx(p)
    with pytest.raises(FileNotFoundError, match=re.escape("missing.idx")):
        read_idx(tmp_path / "missing.idx")


def test_idx_reads_real_mnist(mnist_root: Path) -> None:
    images, labels = raw_mnist(mnist_root)
    got = read_idx(mnist_root / "t10k-images-idx3-ubyte.gz", ndim=3, dtype="u1")
    assert got.shape == (10000, 28, 28)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(read_idx(mnist_root / "t10k-labels-idx1-ubyte.gz"), labels)


# ---------------------------------------------------------------- avdigits on the real data


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("avdigits-cache")


@pytest.fixture(scope="module")
def arrays(fsdd_root: Path, mnist_root: Path, cache_dir: Path) -> AVDigitsArrays:
    return read_avdigits(fsdd_root, mnist_root, cache_dir=cache_dir)


def parsed(names: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = [NAME.match(str(n)) for n in names]
    assert all(m)
    return (
        np.array([int(x[1]) for x in m]),
        np.array([x[2] for x in m]),
        np.array([int(x[3]) for x in m]),
    )


def test_reads_every_recording(arrays: AVDigitsArrays, fsdd_root: Path) -> None:
    on_disk = sorted(p.name for p in fsdd_root.glob("*.wav"))
    assert len(on_disk) == 3000 and sorted(arrays.file.tolist()) == on_disk
    assert arrays.audio.shape == (3000, 1, 40, 100) and arrays.audio.dtype == np.float32
    assert np.isfinite(arrays.audio).all()
    digit, speaker, index = parsed(arrays.file)
    np.testing.assert_array_equal(arrays.label, digit)
    np.testing.assert_array_equal(arrays.speaker, speaker)
    np.testing.assert_array_equal(arrays.index, index)
    assert np.bincount(arrays.label).tolist() == [300] * 10


def test_pairs_share_the_digit_and_never_reuse_an_image(
    arrays: AVDigitsArrays, mnist_root: Path
) -> None:
    images, labels = raw_mnist(mnist_root)
    digit, _, _ = parsed(arrays.file)
    np.testing.assert_array_equal(labels[arrays.mnist_index], digit)
    np.testing.assert_array_equal(arrays.image, images[arrays.mnist_index])
    assert len(np.unique(arrays.mnist_index)) == 3000


def test_fsdd_split_tests_exactly_indices_0_to_4(
    fsdd_root: Path, mnist_root: Path, cache_dir: Path, arrays: AVDigitsArrays
) -> None:
    data = load_avdigits(fsdd_root, mnist_root, cache_dir=cache_dir, standardize=False)
    assert {m.name: m.shape for m in data.spec.modalities} == {
        "audio": (1, 40, 100),
        "image": (1, 28, 28),
    }
    assert data.spec.num_classes == 10
    rows = {s: data.split(s).index.numpy() for s in ("train", "val", "test")}
    _, _, index = parsed(arrays.file)
    assert set(rows["test"].tolist()) == set(np.flatnonzero(index < 5).tolist())
    assert len(rows["test"]) == 300 and len(rows["val"]) == 270 and len(rows["train"]) == 2430
    assert np.all(index[np.concatenate([rows["train"], rows["val"]])] >= 5)
    assert len(np.unique(np.concatenate(list(rows.values())))) == 3000
    assert data.val.class_counts(10) == [27] * 10
    # unstandardised inputs are exactly the paired arrays
    np.testing.assert_array_equal(
        data.test.inputs["image"][:, 0].numpy() * 255, arrays.image[rows["test"]]
    )
    np.testing.assert_array_equal(data.test.inputs["audio"].numpy(), arrays.audio[rows["test"]])
    np.testing.assert_array_equal(data.test.labels.numpy(), arrays.label[rows["test"]])


def test_speaker_split_keeps_speakers_apart(
    fsdd_root: Path, mnist_root: Path, cache_dir: Path, arrays: AVDigitsArrays
) -> None:
    data = load_avdigits(fsdd_root, mnist_root, split="speaker", cache_dir=cache_dir)
    spk = {s: set(arrays.speaker[data.split(s).index.numpy()]) for s in ("train", "val", "test")}
    assert spk["test"] == {"theo"} and len(data.test) == 500
    assert "theo" not in spk["train"] | spk["val"]
    assert data.info["speakers"]["test"] == ["theo"]
    held = load_avdigits(
        fsdd_root,
        mnist_root,
        split="speaker",
        test_speakers=["george", "lucas"],
        val_speakers="jackson",
        cache_dir=cache_dir,
    )
    spk = {s: set(arrays.speaker[held.split(s).index.numpy()]) for s in ("train", "val", "test")}
    assert spk == {
        "train": {"nicolas", "theo", "yweweler"},
        "val": {"jackson"},
        "test": {"george", "lucas"},
    }
    with pytest.raises(ValueError, match="unknown speaker"):
        load_avdigits(
            fsdd_root, mnist_root, split="speaker", test_speakers="bob", cache_dir=cache_dir
        )
    with pytest.raises(ValueError, match="only apply to split='speaker'"):
        load_avdigits(fsdd_root, mnist_root, test_speakers="theo", cache_dir=cache_dir)


def test_cache_is_hit_then_rebuilt_when_a_parameter_changes(
    fsdd_root: Path, mnist_root: Path, tmp_path: Path
) -> None:
    first = load_avdigits(fsdd_root, mnist_root, cache_dir=tmp_path)
    again = load_avdigits(fsdd_root, mnist_root, cache_dir=tmp_path)
    assert (first.info["cache"], again.info["cache"]) == ("built", "hit")
    assert first.info["cache_path"] == again.info["cache_path"]
    assert first.fingerprint == again.fingerprint
    torch.testing.assert_close(first.train.inputs["audio"], again.train.inputs["audio"])
    fewer = load_avdigits(fsdd_root, mnist_root, n_mels=32, cache_dir=tmp_path)
    assert fewer.info["cache"] == "built" and fewer.info["cache_path"] != first.info["cache_path"]
    assert fewer.spec["audio"].shape == (1, 32, 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(d.info["cache_path"]).name for d in (first, fewer)
    )  # no temporary leftovers
    # a damaged cache file is rebuilt rather than trusted
    Path(first.info["cache_path"]).write_bytes(b"not a zip")
    assert load_avdigits(fsdd_root, mnist_root, cache_dir=tmp_path).info["cache"] == "built"


def test_pairing_is_seeded(
    fsdd_root: Path, mnist_root: Path, arrays: AVDigitsArrays, tmp_path: Path
) -> None:
    other = read_avdigits(fsdd_root, mnist_root, frames=20, pair_seed=1, cache_dir=tmp_path)
    assert other.cache == "built" and other.audio.shape == (3000, 1, 40, 20)
    assert not np.array_equal(other.mnist_index, arrays.mnist_index)
    same = read_avdigits(fsdd_root, mnist_root, frames=20, pair_seed=0, cache_dir=tmp_path)
    np.testing.assert_array_equal(same.mnist_index, arrays.mnist_index)


def some_recordings(fsdd_root: Path, dest: Path) -> list[Path]:
    dest.mkdir()
    picked = [
        fsdd_root / f"{d}_{s}_{i}.wav"
        for d in range(10)
        for s in ("george", "theo")
        for i in range(10)
    ]
    return [Path(shutil.copy(p, dest / p.name)) for p in picked]


def test_corrupt_recording_is_named(fsdd_root: Path, mnist_root: Path, tmp_path: Path) -> None:
    copies = some_recordings(fsdd_root, tmp_path / "rec")
    small = load_avdigits(tmp_path / "rec", mnist_root, cache_dir=tmp_path / "c")
    assert len(small.test) == 100
    copies[7].write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ValueError, match=re.escape(copies[7].name)):
        load_avdigits(tmp_path / "rec", mnist_root, cache_dir=tmp_path / "c")


def test_badly_named_recording_is_named(fsdd_root: Path, mnist_root: Path, tmp_path: Path) -> None:
    copies = some_recordings(fsdd_root, tmp_path / "rec")
    shutil.copy(copies[0], tmp_path / "rec" / "zero_george_1.wav")
    with pytest.raises(ValueError, match=re.escape("zero_george_1.wav")):
        load_avdigits(tmp_path / "rec", mnist_root, cache_dir=tmp_path / "c")


def test_missing_roots_and_files_are_named(
    fsdd_root: Path, mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*speaker"):
        load_avdigits(missing, mnist_root, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*idx"):
        load_avdigits(fsdd_root, missing, cache_dir=tmp_path)
    (tmp_path / "mnist").mkdir()
    shutil.copy(mnist_root / "t10k-labels-idx1-ubyte.gz", tmp_path / "mnist")
    with pytest.raises(FileNotFoundError, match=re.escape("t10k-images-idx3-ubyte.gz")):
        load_avdigits(fsdd_root, tmp_path / "mnist", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no recordings in"):
        load_avdigits(tmp_path / "empty", mnist_root, cache_dir=tmp_path)
    monkeypatch.delenv("UNIPAIR_FSDD_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="UNIPAIR_FSDD_ROOT"):
        load_avdigits(mnist_root=mnist_root, cache_dir=tmp_path)


def test_env_defaults_and_registry(
    fsdd_root: Path, mnist_root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIPAIR_FSDD_ROOT", str(fsdd_root))
    monkeypatch.setenv("UNIPAIR_MNIST_ROOT", str(mnist_root))
    monkeypatch.setenv("UNIPAIR_CACHE", str(cache_dir))
    assert "avdigits" in list_datasets()
    data = create("avdigits", seed=3)
    assert data.info["cache"] == "hit" and Path(data.info["cache_path"]).parent == cache_dir
    assert data.describe()["splits"] == {"train": 2430, "val": 270, "test": 300}
