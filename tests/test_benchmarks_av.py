"""CREMA-D, Kinetics-Sounds and AVE loaders on miniature copies in their real on-disk layouts:
real FSDD recordings written as wav with soundfile, videos encoded with PyAV (flv, mp4 with an
AAC track), extracted frames as jpg folders written with Pillow, and ids taken from the shipped
split lists (a few clips of a few classes; every other listed clip is absent, as in a partial
copy). Also the media-fragment time segments (``clip.mp4#t=6,10``) the AVE loader relies on.

Video frame i of every encoded clip is a flat grey of value ``STEP * i``, so the frame a reader
chose can be read back from its pixels."""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

import unipair
from unipair.data.benchmarks.ave import load_ave
from unipair.data.benchmarks.crema_d import load_crema_d
from unipair.data.benchmarks.kinetics_sounds import load_kinetics_sounds
from unipair.data.dataset import MultimodalData
from unipair.data.media.audio import read_audio
from unipair.data.media.video import read_video_frames
from unipair.data.readers import create_reader, infer_kind, split_time_fragment
from unipair.data.registry import DATASETS, create
from unipair.engine.config import load_config
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

SIDE = 32  # video frame side, pixels
STEP = 6  # grey level per frame index
RATE = 16000  # audio sample rate of the encoded files
SPLITS = resources.files("unipair.data") / "splits"
#: small readers: 8 kHz log-mel, 2 frames of 32 pixels
SMALL = {
    "audio": "logmel",
    "audio_options": {"sample_rate": 8000, "n_fft": 256, "hop_length": 80, "n_mels": 32,
                      "frames": 40},
    "frames": 2,
    "size": SIDE,
}  # fmt: skip
MODEL = {
    "width": 32,
    "encoders": {
        "audio": {"name": "cnn", "options": {"channels": [8, 16], "dropout": 0.0}},
        "video": {"name": "resnet18"},
    },
}
#: the registration lines of data/registry.py
LOADERS = {
    "crema_d": "unipair.data.benchmarks.crema_d:load_crema_d",
    "kinetics_sounds": "unipair.data.benchmarks.kinetics_sounds:load_kinetics_sounds",
    "ave": "unipair.data.benchmarks.ave:load_ave",
}


# ---------------------------------------------------------------------------- writing media
@pytest.fixture(scope="module")
def av() -> ModuleType:
    return pytest.importorskip("av", reason="PyAV (the media extra) is not installed")


@pytest.fixture(scope="module")
def pil() -> ModuleType:
    return pytest.importorskip("PIL.Image", reason="Pillow (the media extra) is not installed")


@pytest.fixture(scope="module")
def voices(fsdd_root: Path) -> list[np.ndarray]:
    """Real spoken digits at RATE, as float32 waves."""
    files = sorted(fsdd_root.glob("*.wav"))[::97][:24]
    if not files:
        pytest.skip(f"no FSDD recordings under {fsdd_root}")
    return [read_audio(f, RATE) for f in files]


def speech(voices: list[np.ndarray], seconds: float, k: int) -> np.ndarray:
    """``seconds`` of real speech: recordings from the k-th on, end to end."""
    n = round(seconds * RATE)
    wave = np.concatenate([voices[(k + i) % len(voices)] for i in range(40)])[:n]
    return np.pad(wave, (0, n - len(wave)))


def grey(i: int) -> np.ndarray:
    return np.full((SIDE, SIDE, 3), STEP * i % 256, dtype=np.uint8)


def write_video(
    av: ModuleType, path: Path, frames: int, fps: int, wave: np.ndarray | None = None
) -> None:
    """A real video file: frame i a flat grey STEP * i (flv: flv1 codec, else mpeg4), and with
    ``wave`` an AAC audio track of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("flv" if path.suffix == ".flv" else "mpeg4", rate=fps)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        stream.bit_rate, stream.gop_size = 8_000_000, 1  # a frame's grey level survives
        track = None
        if wave is not None:
            track = out.add_stream("aac", rate=RATE)
            track.layout = "mono"
        for i in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(grey(i), format="rgb24")))
        out.mux(stream.encode())
        if track is not None and wave is not None:
            frame = av.AudioFrame.from_ndarray(wave[None, :].astype(np.float32), "flt", "mono")
            frame.sample_rate, frame.pts = RATE, 0
            out.mux(track.encode(frame))
            out.mux(track.encode())


def write_frames(pil: ModuleType, folder: Path, indices: list[int]) -> None:
    """OGM-GE's extracted frames: ``<clip>/{frame index:05d}.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in indices:
        pil.fromarray(grey(i)).save(folder / f"{i:05d}.jpg", quality=95)


def listed(name: str, file: str) -> list[str]:
    text = (SPLITS / name / file).read_text(encoding="utf-8-sig")
    return [line.strip() for line in text.splitlines() if line.strip()]


def ids_of(data: MultimodalData, split: str) -> set[str]:
    ds = data.split(split)
    return {str(ds.table.columns["id"][int(r)]) for r in ds.rows}


def frame_index(x: np.ndarray) -> int:
    """The frame a decoded grey frame is (its mean grey level over STEP)."""
    return round(float(np.mean(x)) / STEP)


def train_one_epoch(tmp_path: Path, name: str, options: dict[str, Any]) -> dict[str, float]:
    result = unipair.train({
        "dataset": {"name": name, "options": {**options, "augment": False}},
        "method": "joint",
        "model": MODEL,
        "optim": {"lr": 3e-3},
        "train": {"epochs": 1, "batch_size": 16},
        "fabric": {"accelerator": "cpu"},
        "logging": {"progress": "none"},
        "out": str(tmp_path),
        "name": name,
    })  # fmt: skip
    return result.history[0]


# --------------------------------------------------------------------------- time segments
@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("a/clip.mp4", ("a/clip.mp4", None, None)),
        ("a/clip.mp4#t=6,10", ("a/clip.mp4", 6.0, 10.0)),
        ("clip.wav#t=npt:2.5,7", ("clip.wav", 2.5, 7.0)),
        ("clip.wav#t=3", ("clip.wav", 3.0, None)),
        ("clip.wav#t=,4", ("clip.wav", None, 4.0)),
        ("take#2.wav", ("take#2.wav", None, None)),
    ],
)
def test_time_fragments_parse(cell: str, expected: tuple) -> None:
    assert split_time_fragment(cell) == expected


@pytest.mark.parametrize("cell", ["clip.wav#t=5,2", "clip.wav#t=3,3", "clip.wav#t=a,b", "x#t="])
def test_bad_time_fragments_name_the_cell(cell: str) -> None:
    with pytest.raises(DataFormatError, match=cell.replace("*", r"\*")):
        split_time_fragment(cell)


def test_wav_segment_is_exactly_that_slice(voices: list[np.ndarray], tmp_path: Path) -> None:
    wave = speech(voices, 3.0, 0)
    path = tmp_path / "speech.wav"
    sf.write(path, wave, RATE, subtype="FLOAT")
    whole = read_audio(path)
    np.testing.assert_array_equal(read_audio(path, start=0.5, end=2.25), whole[8000:36000])
    np.testing.assert_array_equal(read_audio(path, start=2.0), whole[32000:])
    np.testing.assert_array_equal(read_audio(path, end=1.0), whole[:16000])
    assert len(read_audio(path, 8000, start=1.0, end=2.5)) == 12000  # resampled after the cut
    assert len(read_audio(path, start=2.5, end=9.0)) == 8000  # past the end: what exists
    with pytest.raises(DataFormatError, match="no sample in"):
        read_audio(path, start=4.0, end=5.0)
    with pytest.raises(ConfigError, match="need 0 <= start < end"):
        read_audio(path, start=2.0, end=1.0)
    # through a reader: the cell's segment, as the manifest gives it
    options = {"sample_rate": RATE, "n_fft": 512, "hop_length": 160}
    reader = create_reader("audio", features="logmel", feature_options=options, duration=1.0)
    cut = reader.load(f"{path}#t=0.5,1.5", False, None)
    assert torch.equal(cut, reader._features(whole[8000:24000]))
    assert infer_kind(f"{path}#t=0.5,1.5", tmp_path) == "audio"


def test_video_file_segment_reads_only_its_seconds(
    av: ModuleType, voices: list[np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "clip.mp4"
    write_video(av, path, frames=40, fps=4, wave=speech(voices, 10.0, 3))
    # audio: the seeked segment is the whole decode's slice (up to the AAC decoder's state
    # after a seek, ~1e-5), exactly as long as the segment
    whole = read_audio(path)
    cut = read_audio(path, start=6.0, end=10.0)
    assert len(cut) == 4 * RATE
    np.testing.assert_allclose(cut, whole[6 * RATE : 10 * RATE], rtol=0, atol=1e-4)
    # frames: chosen within [6, 10) s, i.e. frames 24..39 at 4 fps
    for rule, fps in (("uniform", None), ("random", None), ("uniform", 1)):
        gen = torch.Generator().manual_seed(0)
        frames = read_video_frames(path, 3, rule, gen, fps=fps, start=6.0, end=10.0)
        shown = [frame_index(f) for f in frames]
        assert all(24 <= i <= 39 for i in shown), (rule, fps, shown)
    # 1 fps from the segment's first frame: frames 24, 28, 32, 36; the middle of 2 segments
    got = read_video_frames(path, 2, fps=1, start=6.0, end=10.0)
    assert [frame_index(f) for f in got] == [28, 36]
    assert [frame_index(f) for f in read_video_frames(path, 2)] == [10, 30]  # no segment
    with pytest.raises(DataFormatError, match="shows no frame in"):
        read_video_frames(path, 2, start=11.0, end=12.0)
    reader = create_reader("video", frames=2, fps=1, size=SIDE)
    assert [frame_index(f) for f in reader.load(f"{path}#t=6,10", False, None)] == [28, 36]


def test_a_frame_folder_cannot_take_a_segment(pil: ModuleType, tmp_path: Path) -> None:
    write_frames(pil, tmp_path / "clip", [0, 1, 2])
    reader = create_reader("frames", frames=2, size=SIDE)
    with pytest.raises(DataFormatError, match="cannot be cut to a time segment"):
        reader.load(f"{tmp_path / 'clip'}#t=0,1", False, None)


# ------------------------------------------------------------------------------- CREMA-D
CREMA_CLASSES = ["NEU", "ANG"]


def crema_picks() -> list[tuple[str, str, str]]:
    """(clip, label, list) of 2 classes: every actor's first train clip of one class (NEU for
    even actors, ANG for odd ones) and every third actor's first test clip of it; 91 actors,
    so the speaker split has all three parts."""
    picks, seen = [], set()
    for part in ("train", "test"):
        for row in listed("crema_d", f"{part}.csv"):
            clip, label = row.split(",")
            actor = int(clip[:4])
            if label == CREMA_CLASSES[actor % 2] and (actor, part) not in seen:
                seen.add((actor, part))
                if part == "train" or actor % 3 == 0:
                    picks.append((clip, label, part))
    return picks


@pytest.fixture(scope="module")
def crema_root(
    tmp_path_factory: pytest.TempPathFactory, av: ModuleType, pil: ModuleType, voices
) -> Path:
    """CREMA-D's layout: AudioWAV/*.wav, VideoFlash/*.flv (2.5 s at 8 fps) and OGM-GE's
    Image-01-FPS/<clip>/ frames (one per second: 00000, 00008, 00016)."""
    root = tmp_path_factory.mktemp("crema_d")
    for k, (clip, _, _) in enumerate(crema_picks()):
        (root / "AudioWAV").mkdir(exist_ok=True)
        sf.write(root / "AudioWAV" / f"{clip}.wav", voices[k % len(voices)], RATE)
        write_video(av, root / "VideoFlash" / f"{clip}.flv", frames=20, fps=8)
        write_frames(pil, root / "Image-01-FPS" / clip, [0, 8, 16])
    return root


def test_crema_d_ogm_split_counts_labels_and_shapes(crema_root: Path) -> None:
    picks = crema_picks()
    data = load_crema_d(crema_root, classes=CREMA_CLASSES, on_error="skip", **SMALL)
    assert data.name == "crema_d" and data.info["classes"] == CREMA_CLASSES
    assert {m.name: m.shape for m in data.spec.modalities} == {
        "audio": (1, 32, 40), "video": (3, 2, SIDE, SIDE),
    }  # fmt: skip
    train_ids = {c for c, _, part in picks if part == "train"}
    test_ids = {c for c, _, part in picks if part == "test"}
    assert ids_of(data, "test") == test_ids
    assert ids_of(data, "train") | ids_of(data, "val") == train_ids
    assert len(ids_of(data, "val")) == math.ceil(0.1 * len(train_ids))
    assert "val = 0.1 of train" in data.info["split_rule"]
    # every listed NEU/ANG clip that is not in the tree is missing, and recorded
    listed_n = sum(
        1 for p in ("train", "test") for r in listed("crema_d", f"{p}.csv")
        if r.split(",")[1] in CREMA_CLASSES
    )  # fmt: skip
    assert data.info["missing_items"] == listed_n - len(picks)
    assert len(data.info["skipped_rows"]) == 2 * (listed_n - len(picks))  # wav and flv each
    # labels follow OGM-GE's order within the chosen classes (NEU 0, ANG 1), and the clip id
    batch = data.test.fetch(torch.arange(len(data.test)))
    for row, label in zip(batch.index.tolist(), batch.labels.tolist(), strict=True):
        clip = data.test.table.columns["id"][row]
        assert CREMA_CLASSES[label] == clip.split("_")[2]
    assert torch.isfinite(batch.inputs["audio"]).all() and batch.inputs["audio"].std() > 0.1
    # 2 of the 3 1-fps frames (0, 8, 16 of the 8-fps flv): the middles of [0, 1) and [1, 3)
    raw = create_reader("video", frames=2, fps=1, size=SIDE).load(
        str(crema_root / "VideoFlash" / f"{picks[0][0]}.flv"), False, None
    )
    assert [frame_index(f) for f in raw] == [0, 16]


def test_crema_d_frame_folders_give_the_flv_frames(crema_root: Path) -> None:
    opts = {**SMALL, "classes": CREMA_CLASSES, "on_error": "skip", "augment": False}
    flv = load_crema_d(crema_root, **opts)
    folders = load_crema_d(crema_root, video="frames", **opts)
    rows = torch.arange(6)
    a, b = flv.test.fetch(rows), folders.test.fetch(rows)
    assert torch.equal(a.inputs["audio"], b.inputs["audio"])
    # the same frames (flv vs jpg coding of a flat grey: within a few levels)
    assert (a.inputs["video"] - b.inputs["video"]).abs().max() < 0.2


def test_crema_d_speaker_split_is_actor_disjoint(crema_root: Path) -> None:
    data = load_crema_d(
        crema_root, split="speaker", classes=CREMA_CLASSES, on_error="skip", **SMALL
    )
    actors = {s: {c[:4] for c in ids_of(data, s)} for s in ("train", "val", "test")}
    assert all(actors.values())
    assert not (actors["train"] & actors["val"] or actors["train"] & actors["test"])
    assert not actors["val"] & actors["test"]
    assert "64/9/18 actors" in data.info["split_rule"]
    # the partition is fixed by split_seed, not by the run seed
    again = load_crema_d(
        crema_root, split="speaker", classes=CREMA_CLASSES, on_error="skip", seed=5, **SMALL
    )
    assert ids_of(again, "test") == ids_of(data, "test")
    other = load_crema_d(
        crema_root, split="speaker", split_seed=1, classes=CREMA_CLASSES, on_error="skip",
        **SMALL,
    )  # fmt: skip
    assert ids_of(other, "test") != ids_of(data, "test")


def test_crema_d_partial_copy_errors_are_clear(crema_root: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"of 7442 listed clips are missing.*on_error"):
        load_crema_d(crema_root, **SMALL)
    with pytest.raises(DataFormatError, match=r"class\(es\) \['HAP', 'SAD', 'FEA', 'DIS'\]"):
        load_crema_d(crema_root, on_error="skip", **SMALL)


def test_crema_d_decode_throughput(crema_root: Path) -> None:
    """Not a timing assertion (bench/ holds targets): the train view decodes and its rate is
    printed, for the record."""
    data = load_crema_d(crema_root, classes=CREMA_CLASSES, on_error="skip", frames=1)
    n = min(len(data.train), 32)
    start = time.perf_counter()
    batch = data.train.fetch(torch.arange(n), epoch=0)
    rate = n / (time.perf_counter() - start)
    assert batch.inputs["audio"].shape == (n, 1, 1024, 128)
    assert batch.inputs["video"].shape == (n, 3, 1, 224, 224)
    print(f"crema_d train view (fbank + 1 frame at 224, 0 workers): {rate:.0f} samples/s")


@pytest.fixture
def small_crema(tmp_path: Path, crema_root: Path) -> tuple[Path, Path]:
    """Six clips of the tree in a copy of their own, and lists naming exactly them (2 train
    and 1 test clip per class, OGM-GE's format with CRLF line ends)."""
    picks = crema_picks()
    train = [p for p in picks if p[2] == "train" and p[1] == "NEU"][:2]
    train += [p for p in picks if p[2] == "train" and p[1] == "ANG"][:2]
    test = [next(p for p in picks if p[2] == "test" and p[1] == label) for label in CREMA_CLASSES]
    root, lists = tmp_path / "crema", tmp_path / "lists"
    lists.mkdir()
    for part, clips in (("train", train), ("test", test)):
        (lists / f"{part}.csv").write_text("".join(f"{c},{lab}\r\n" for c, lab, _ in clips))
        for clip, _, _ in clips:
            for sub, name in (("AudioWAV", f"{clip}.wav"), ("VideoFlash", f"{clip}.flv")):
                (root / sub).mkdir(parents=True, exist_ok=True)
                shutil.copy(crema_root / sub / name, root / sub / name)
    return root, lists


def _missing_folder(root: Path, lists: Path) -> tuple[type[Exception], str]:
    shutil.rmtree(root / "VideoFlash")
    return DataNotFoundError, f"video folder {root / 'VideoFlash'} does not exist"


def _renamed_file(root: Path, lists: Path) -> tuple[type[Exception], str]:
    wav = next((root / "AudioWAV").iterdir())
    wav.rename(wav.with_name("renamed.wav"))
    return DataNotFoundError, f"1 of 6 listed clips are missing from {root} (e.g. {wav})"


def _label_spelling(root: Path, lists: Path) -> tuple[type[Exception], str]:
    rows = (lists / "train.csv").read_text().splitlines()
    rows[1] = rows[1].replace(",NEU", ",NEUTRAL")
    (lists / "train.csv").write_text("\n".join(rows))
    return DataFormatError, f"split list {lists / 'train.csv'} line 2: unknown label 'NEUTRAL'"


def _empty_list(root: Path, lists: Path) -> tuple[type[Exception], str]:
    (lists / "test.csv").write_text("\r\n")
    return DataFormatError, f"split list {lists / 'test.csv'} is empty"


def _missing_root(root: Path, lists: Path) -> tuple[type[Exception], str]:
    shutil.rmtree(root)
    return DataNotFoundError, f"dataset folder {root} does not exist"


@pytest.mark.parametrize(
    "break_it", [_missing_folder, _renamed_file, _label_spelling, _empty_list, _missing_root]
)
def test_crema_d_malformed_trees_name_the_path(
    small_crema: tuple[Path, Path], break_it: Callable[[Path, Path], tuple[type, str]]
) -> None:
    root, lists = small_crema
    opts = {**SMALL, "lists": lists, "val_fraction": 0.5, "classes": CREMA_CLASSES}
    assert len(load_crema_d(root, **opts).train) == 2  # intact: 2 train, 2 val, 2 test
    error, message = break_it(root, lists)
    with pytest.raises(error, match=re.escape(message)):
        load_crema_d(root, **opts)


def test_crema_d_runs_one_epoch_of_joint(crema_root: Path, tmp_path: Path) -> None:
    opts = {"root": str(crema_root), "classes": CREMA_CLASSES, "on_error": "skip", **SMALL}
    logs = train_one_epoch(tmp_path, "crema_d", opts)
    assert math.isfinite(logs["train/loss"]) and 0.0 <= logs["val/acc"] <= 1.0


# ------------------------------------------------------------------------- Kinetics-Sounds
KS_CLASSES = ["3", "17"]


def ks_picks() -> list[tuple[str, str, str]]:
    """(id, label, list): 8 train and 2 test clips of each of two classes."""
    picks = []
    for part, per_class in (("train", 8), ("test", 2)):
        for label in KS_CLASSES:
            rows = [r.split(",") for r in listed("kinetics_sounds", f"{part}.txt")]
            picks += [(i, label, part) for i, _, lab in rows if lab == label][:per_class]
    return picks


@pytest.fixture(scope="module")
def ks_root(
    tmp_path_factory: pytest.TempPathFactory, av: ModuleType, pil: ModuleType, voices
) -> Path:
    """Both layouts in one tree: video/<id>.mp4 (3 s, 4 fps, AAC speech), audio/<id>.wav and
    Image-01-FPS/<id>/ frames."""
    root = tmp_path_factory.mktemp("kinetics_sounds")
    (root / "audio").mkdir()
    for k, (clip, _, _) in enumerate(ks_picks()):
        wave = speech(voices, 3.0, k)
        write_video(av, root / "video" / f"{clip}.mp4", frames=12, fps=4, wave=wave)
        sf.write(root / "audio" / f"{clip}.wav", wave, RATE)
        write_frames(pil, root / "Image-01-FPS" / clip, [0, 4, 8])
    return root


@pytest.mark.parametrize(("layout", "video"), [("wav", "frames"), ("video", "file")])
def test_kinetics_sounds_layouts(ks_root: Path, layout: str, video: str) -> None:
    picks = ks_picks()
    with pytest.raises(DataNotFoundError) as e:
        load_kinetics_sounds(ks_root, layout=layout, video=video, **SMALL)
    total = 14799 + 2597
    assert f"{total - len(picks)} of {total} listed clips are missing" in str(e.value)
    assert "on_error: skip" in str(e.value) and "unipair datasets check" in str(e.value)
    data = load_kinetics_sounds(
        ks_root, layout=layout, video=video, classes=KS_CLASSES, on_error="skip", **SMALL
    )
    listed_n = sum(
        1 for p in ("train", "test") for r in listed("kinetics_sounds", f"{p}.txt")
        if r.split(",")[2] in KS_CLASSES
    )  # fmt: skip
    assert data.info["missing_items"] == listed_n - len(picks)
    assert {e["line"] for e in data.info["skipped_rows"]} and data.info["classes"] == KS_CLASSES
    assert ids_of(data, "test") == {i for i, _, p in picks if p == "test"}
    assert ids_of(data, "train") | ids_of(data, "val") == {i for i, _, p in picks if p == "train"}
    batch = data.test.fetch(torch.arange(len(data.test)))
    for row, label in zip(batch.index.tolist(), batch.labels.tolist(), strict=True):
        clip = data.test.table.columns["id"][row]
        assert KS_CLASSES[label] == next(lab for i, lab, _ in picks if i == clip)
    assert batch.inputs["video"].shape == (len(data.test), 3, 2, SIDE, SIDE)
    assert torch.isfinite(batch.inputs["audio"]).all() and batch.inputs["audio"].std() > 0.1


def test_kinetics_sounds_folders_can_be_renamed(ks_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "ks"
    root.mkdir()
    (root / "clips").symlink_to(ks_root / "video")
    with pytest.raises(DataNotFoundError, match=f"video folder {root / 'video'} does not exist"):
        load_kinetics_sounds(root, layout="video", classes=KS_CLASSES, on_error="skip")
    data = load_kinetics_sounds(
        root, layout="video", folders={"video": "clips"}, classes=KS_CLASSES, on_error="skip",
        **SMALL,
    )  # fmt: skip
    assert str(root / "clips") in data.train.table.columns["audio"][0]
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['wav'\]"):
        load_kinetics_sounds(root, folders={"wav": "x"})


@pytest.mark.parametrize("load", [load_kinetics_sounds, load_ave], ids=["ks", "ave"])
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"layout": "mp3"}, r"layout must be 'wav' or 'video', got 'mp3'"),
        ({"video": "flv"}, r"video must be one of \['file', 'frames'\], got 'flv'"),
        ({"folders": {"wav": "x"}}, r"folders has unknown key\(s\) \['wav'\]"),
        ({"video": "frames", "fps": 2.5}, r"frame folders are named by a whole fps"),
    ],
)
def test_wav_or_video_layouts_check_their_options_first(
    load: Callable, options: dict, match: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=match):
        load(tmp_path, **options)


def test_kinetics_sounds_bad_label_index_names_the_line(ks_root: Path, tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a_1,10,3\nb_2,10,31\n")
    (tmp_path / "test.txt").write_text("c_3,10,17\n")
    with pytest.raises(DataFormatError, match=r"train\.txt line 2: label '31' is not a class"):
        load_kinetics_sounds(ks_root, lists=tmp_path)


def test_kinetics_sounds_runs_one_epoch_of_joint(ks_root: Path, tmp_path: Path):
    opts = {"root": str(ks_root), "layout": "video", "classes": KS_CLASSES, "on_error": "skip"}
    logs = train_one_epoch(tmp_path, "kinetics_sounds", {**opts, **SMALL})
    assert math.isfinite(logs["train/loss"])


# ------------------------------------------------------------------------------------ AVE
AVE_CLASSES = ["Church bell", "Male speech, man speaking", "Female speech, woman speaking"]
DUPLICATE = "-ccciEuH9FE"  # listed twice in trainSet.txt: male, then female speech


def ave_picks() -> list[tuple[str, str, str, int, int]]:
    """(id, category, list, start, end): 3 train, 1 val and 1 test event of each category
    (the first with a partial segment where there is one), plus the duplicated video."""
    picks = []
    for part, file, n in (("train", "trainSet.txt", 3), ("val", "valSet.txt", 1),
                          ("test", "testSet.txt", 1)):  # fmt: skip
        rows = [r.split("&") for r in listed("ave", file)]
        for category in AVE_CLASSES:
            mine = [r for r in rows if r[0] == category and r[1] != DUPLICATE and r[4] != r[3]]
            mine.sort(key=lambda r: (r[3], r[4]) == ("0", "10"))  # partial segments first
            picks += [(r[1], r[0], part, int(r[3]), int(r[4])) for r in mine[:n]]
    picks.append((DUPLICATE, AVE_CLASSES[1], "train", 5, 10))
    return picks


@pytest.fixture(scope="module")
def ave_root(tmp_path_factory: pytest.TempPathFactory, av: ModuleType, voices) -> Path:
    """AVE_Dataset's layout: AVE/<id>.mp4, 10 s at 4 fps with an AAC track of speech."""
    root = tmp_path_factory.mktemp("ave")
    for k, (video_id, *_) in enumerate(ave_picks()):
        path = root / "AVE" / f"{video_id}.mp4"
        if not path.exists():
            write_video(av, path, frames=40, fps=4, wave=speech(voices, 10.0, k))
    return root


def test_ave_reads_the_event_segments(ave_root: Path) -> None:
    picks = ave_picks()
    data = load_ave(ave_root, classes=AVE_CLASSES, on_error="skip", **SMALL)
    assert data.info["classes"] == AVE_CLASSES  # testSet.txt order: 0, 1 and 5 of the 28
    by_id = {f"{p}/{i}": (c, s, e) for i, c, p, s, e in picks}
    for split in ("train", "val", "test"):
        assert ids_of(data, split) == {k for k in by_id if k.startswith(f"{split}/")}
    # the duplicated video once, with its first listing's category; the repeat recorded
    table = data.train.table
    row = table.columns["id"].index(f"train/{DUPLICATE}")
    assert table.columns["label"][row] == AVE_CLASSES[1]
    assert {"list": "trainSet.txt", "id": DUPLICATE, "kept": AVE_CLASSES[1]}.items() <= next(
        d for d in data.info["duplicates_dropped"] if d["id"] == DUPLICATE
    ).items()
    assert len(data.info["duplicates_dropped"]) == 28  # 27 in train, 1 in val
    assert [d["id"] for d in data.info["empty_segments"]] == ["VWi2ENBuTbw"]
    # every cell carries its segment; the audio is exactly the segment long, the frames in it
    reader = data.train.readers["video"]
    for key, (category, start, end) in by_id.items():
        row = table.columns["id"].index(key)
        assert table.columns["label"][row] == category
        cell = table.columns["audio"][row]
        assert cell.endswith(f".mp4#t={start},{end}")
        path, s, e = split_time_fragment(cell)
        assert len(read_audio(path, RATE, start=s, end=e)) == (end - start) * RATE
        shown = [frame_index(f) for f in reader.load(table.columns["video"][row], False, None)]
        assert all(4 * start <= i < 4 * end for i in shown), (key, shown)
    batch = data.val.fetch(torch.arange(len(data.val)))
    assert batch.inputs["video"].shape == (3, 3, 2, SIDE, SIDE)
    # missing: each list's first listing of every video (with a segment) of these categories,
    # but the picks
    first = [
        {r[1]: r[0] for r in reversed([r.split("&") for r in listed("ave", f)]) if r[3] != r[4]}
        for f in ("trainSet.txt", "valSet.txt", "testSet.txt")
    ]
    events = sum(1 for part in first for c in part.values() if c in AVE_CLASSES)
    assert data.info["missing_items"] == events - len(picks)


def test_ave_segments_prepare_into_a_cache(ave_root: Path, tmp_path: Path) -> None:
    """``unipair prepare ave``: the cache holds the segments' samples, and its fingerprint
    follows the segment's file (the cell minus its #t=), so a changed video is noticed."""
    import os

    from unipair.data.prepared import prepare

    opts = {"root": str(ave_root), "classes": AVE_CLASSES, "on_error": "skip", **SMALL}
    folder = prepare("ave", tmp_path / "cache", opts)
    files = load_ave(**{**opts, "augment": False})
    cached = load_ave(**{**opts, "augment": False, "prepared": str(folder)})
    rows = torch.arange(len(files.val))
    a, b = files.val.fetch(rows), cached.val.fetch(rows)
    for m in ("audio", "video"):
        assert torch.equal(a.inputs[m], b.inputs[m]), m
    video = ave_root / "AVE" / f"{ave_picks()[0][0]}.mp4"
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(DataFormatError, match="changed since `unipair prepare`"):
        load_ave(**{**opts, "prepared": str(folder)})
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_ave_unknown_category_names_the_line(ave_root: Path, tmp_path: Path) -> None:
    rows = [r for r in listed("ave", "testSet.txt")]
    (tmp_path / "testSet.txt").write_text("\n".join(rows) + "\n")
    (tmp_path / "valSet.txt").write_text("\n".join(rows[:3]) + "\n")
    (tmp_path / "trainSet.txt").write_text(rows[0] + "\nChurch bells&x&good&0&10\n")
    with pytest.raises(DataFormatError, match=r"trainSet\.txt line 2: unknown category"):
        load_ave(ave_root, lists=tmp_path)
    (tmp_path / "testSet.txt").write_text("Church bel&x&good&0&10\n" + "\n".join(rows))
    with pytest.raises(DataFormatError, match=r"testSet\.txt line 1: unknown category"):
        load_ave(ave_root, lists=tmp_path)


def test_ave_runs_one_epoch_of_joint(ave_root: Path, tmp_path: Path) -> None:
    opts = {"root": str(ave_root), "classes": AVE_CLASSES, "on_error": "skip", **SMALL}
    logs = train_one_epoch(tmp_path, "ave", opts)
    assert math.isfinite(logs["train/loss"])


# -------------------------------------------------------------------------------- presets
@pytest.mark.parametrize(
    ("preset", "dataset"),
    [("ogm_crema_d", "crema_d"), ("mla_crema_d", "crema_d"),
     ("ogm_kinetics_sounds", "kinetics_sounds"), ("ogm_ave", "ave")],
)  # fmt: skip
def test_presets_validate_and_leave_the_root_to_the_user(
    preset: str, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(f"UNIPAIR_{dataset.upper()}_ROOT", raising=False)
    config = load_config(f"preset:{preset}")
    assert config.dataset.name == dataset and "root" not in config.dataset.options
    text = (resources.files("unipair.presets") / f"{preset}.yaml").read_text()
    header = " ".join(ln for ln in text.splitlines() if ln.startswith("#"))
    for said in ("CVPR", "Split:", "selected on val", "lr 1e-3", "momentum 0.9",
                 "weight decay 1e-4", "100 epochs", "batch 64", "ResNet-18"):  # fmt: skip
        assert said in header, (preset, said)
    with pytest.raises(DataNotFoundError, match="no dataset folder given; set root="):
        create(dataset, **config.dataset.options)


def test_registration_lines_resolve() -> None:
    """The registered ``module:function`` paths import and take a root."""
    import inspect

    for name, path in LOADERS.items():
        assert DATASETS.get(name).loader == path
        assert "root" in inspect.signature(DATASETS.get(name).factory).parameters


def test_split_lists_ship_with_their_licences() -> None:
    for name, files, licence in (
        ("crema_d", ["train.csv", "test.csv", "classes.csv"], "LICENSE-OGM-GE"),
        ("kinetics_sounds", ["train.txt", "test.txt"], "LICENSE-OGM-GE"),
        ("ave", ["trainSet.txt", "valSet.txt", "testSet.txt"], "LICENSE-PMR"),
    ):
        for file in [*files, licence]:
            assert (SPLITS / name / file).is_file(), (name, file)
    sizes = {f: len(listed(n, f)) for n, f in (("crema_d", "train.csv"), ("crema_d", "test.csv"),
             ("kinetics_sounds", "train.txt"), ("ave", "valSet.txt"))}  # fmt: skip
    assert sizes == {"train.csv": 6698, "test.csv": 744, "train.txt": 14799, "valSet.txt": 402}
    assert (SPLITS / "crema_d" / "classes.csv").read_bytes().startswith(b"\xef\xbb\xbfNEU\r\n")


ROOTS = {"crema_d": "crema_root", "kinetics_sounds": "ks_root", "ave": "ave_root"}
CLASSES = {"crema_d": CREMA_CLASSES, "kinetics_sounds": KS_CLASSES, "ave": AVE_CLASSES}


@pytest.mark.parametrize(
    ("preset", "dataset"),
    [("ogm_crema_d", "crema_d"), ("mla_crema_d", "crema_d"),
     ("ogm_kinetics_sounds", "kinetics_sounds"), ("ogm_ave", "ave")],
)  # fmt: skip
def test_presets_build_their_model_on_the_miniature_trees(
    preset: str, dataset: str, request: pytest.FixtureRequest
) -> None:
    """The preset's own readers (224 px frames, its audio feature) and model, on a real tree:
    the data loads and one batch goes through the full model."""
    from unipair.engine.predict import build_method, load_data

    root = request.getfixturevalue(ROOTS[dataset])
    base = {
        "dataset.options.root": str(root),
        "dataset.options.classes": CLASSES[dataset],
        "dataset.options.on_error": "skip",
    }
    if dataset == "kinetics_sounds":
        base["dataset.options.layout"] = "video"
    cfg = load_config(f"preset:{preset}", [], base)
    data = load_data(cfg)
    method = build_method(cfg, data)
    assert sum(p.numel() for p in method.parameters()) > 20e6  # two ResNet-18
    batch = data.test.__getitems__([0, 1])
    method.eval()
    with torch.no_grad():
        logits = method.predict(batch).logits
    assert logits.shape == (2, len(CLASSES[dataset])) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------ the CLI
def _cli(*args: str):
    from typer.testing import CliRunner

    from unipair.cli.main import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_datasets_show_and_check_report_what_a_copy_lacks(crema_root: Path) -> None:
    classes = "classes=[NEU, ANG]"
    shown = _cli("datasets", "show", "crema_d", "--root", str(crema_root), "-o", classes)
    assert shown.exit_code == 0, shown.output
    listed_n = sum(
        1 for p in ("train", "test") for r in listed("crema_d", f"{p}.csv")
        if r.split(",")[1] in CREMA_CLASSES
    )  # fmt: skip
    missing = listed_n - len(crema_picks())
    assert f"missing_items: {missing}" in shown.output
    assert f"left out: {missing} listed items" in " ".join(shown.output.split())
    checked = _cli("datasets", "check", "crema_d", "--root", str(crema_root), "-o", classes)
    assert checked.exit_code == 1
    assert f"{missing} of {listed_n} listed items have problems" in checked.output
    complete = _cli(
        "datasets", "check", "crema_d", "--root", str(crema_root), "-o", classes,
        "-o", "lists=" + str(_lists_of_picks(crema_root.parent / "lists")),
    )  # fmt: skip
    assert complete.exit_code == 0 and "no problem found" in complete.output


def _lists_of_picks(folder: Path) -> Path:
    """CREMA-D split lists holding only the clips the miniature tree has (``lists=``)."""
    folder.mkdir(exist_ok=True)
    picks = crema_picks()
    for part in ("train", "test"):
        rows = [f"{c},{label}" for c, label, p in picks if p == part]
        (folder / f"{part}.csv").write_text("\n".join(rows) + "\n")
    shutil.copy(SPLITS / "crema_d" / "classes.csv", folder / "classes.csv")
    return folder


def test_compare_runs_a_preset_on_a_copy(crema_root: Path, tmp_path: Path) -> None:
    """``compare --preset NAME --root PATH``: every method under the preset's protocol (the
    readers and model shrunk here only to keep the test fast)."""
    small = [
        *(
            f"dataset.options.{k}={v}"
            for k, v in (
                ("classes", "[NEU, ANG]"),
                ("on_error", "skip"),
                ("audio", "logmel"),
                ("frames", 2),
                ("size", 32),
                ("augment", "false"),
                (
                    "audio_options",
                    "{sample_rate: 8000, n_fft: 256, hop_length: 80, n_mels: 32, frames: 40}",
                ),
            )
        ),
        "model.width=16",
        "model.encoders={audio: {name: cnn, options: {channels: [8]}}, "
        "video: {name: cnn, options: {channels: [8]}}}",
        "train.batch_size=8",
        "logging.progress=none",
    ]
    res = _cli(
        "compare", "--preset", "ogm_crema_d", "--root", str(crema_root), "--methods",
        "ogm_ge", "--seeds", "0", "--epochs", "1", "--no-unimodal", "--jobs", "1",
        "--out", str(tmp_path / "cmp"), *(a for kv in small for a in ("--set", kv)),
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    config = (tmp_path / "cmp" / "runs" / "ogm_ge").rglob("config.yaml")
    text = next(config).read_text()
    assert "coefficient: reference" in text and "alpha: 0.8" in text
    assert str(crema_root) in text and "optimizer: sgd" in text
    both = _cli("compare", "--preset", "ogm_crema_d", "-c", "x.yaml")
    assert both.exit_code != 0 and "not both" in both.output
