"""Video frames, images and image transforms of the media layer, on real MNIST digits.

Clips are made here from real MNIST test digits (a different digit in every frame, moving
across a gray frame between a red and a blue band) and encoded with PyAV as mp4 (H.264 and
MPEG-4), flv (FLV1) and avi, or written as JPEG/PNG frame folders with Pillow. Every frame
differs from every other, so a decoded frame is identified by its nearest source frame: that
checks frame counts, the chosen indices, colour order and fps resampling on real decoders.
Tests needing PyAV or Pillow skip with the reason where those optional extras are missing.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unipair.data.idx import read_idx
from unipair.data.media import video as video_mod
from unipair.data.media.image import read_image
from unipair.data.media.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    create_transform,
    sample_generator,
)
from unipair.data.media.video import frame_indices, read_frame_folder, read_video_frames
from unipair.errors import (
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    UnipairError,
    UnknownNameError,
)

N_FRAMES = 30
SIZE = 96
RATE = 10  # frames per second of the encoded clips: 3 s
GRAY, INK = 60.0, 250.0  # luma-only digits: yuv420p chroma subsampling leaves them intact
RED_BAND, BLUE_BAND = (200, 40, 40), (30, 60, 200)  # flat colours: a BGR swap shows
CODECS = {
    "mp4-h264": ("mp4", "libx264"),
    "mp4-mpeg4": ("mp4", "mpeg4"),
    "flv": ("flv", "flv"),  # FLV1 (Sorenson H.263), as CREMA-D's VideoFlash clips
    "avi-mpeg4": ("avi", "mpeg4"),
}


# --------------------------------------------------------------------------- real clips


def make_digit_frames(mnist_root: Path) -> np.ndarray:
    """[30, 96, 96, 3] uint8: test digits 0..29, upscaled 2x, white on gray, moving left to
    right between a red band at the top and a blue band at the bottom."""
    digits = read_idx(mnist_root / "t10k-images-idx3-ubyte.gz", ndim=3, dtype="u1")
    frames = np.empty((N_FRAMES, SIZE, SIZE, 3), np.uint8)
    for t in range(N_FRAMES):
        canvas = np.full((SIZE, SIZE, 3), GRAY, np.float32)
        canvas[:16], canvas[-16:] = RED_BAND, BLUE_BAND
        ink = np.kron(digits[t], np.ones((2, 2), np.uint8)).astype(np.float32)[..., None] / 255
        x = round(t * (SIZE - 56) / (N_FRAMES - 1))
        canvas[20:76, x : x + 56] = GRAY * (1 - ink) + INK * ink
        frames[t] = np.rint(canvas).astype(np.uint8)
    return frames


@pytest.fixture(scope="module")
def digit_frames(mnist_root: Path) -> np.ndarray:
    return make_digit_frames(mnist_root)


def encode(path: Path, frames: np.ndarray, codec: str, **container_options: str) -> Path:
    av = pytest.importorskip("av", reason="PyAV (the media extra) is not installed")
    with av.open(str(path), mode="w", options=container_options) as container:
        stream = container.add_stream(codec, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.bit_rate = 2_000_000  # MPEG-4 and FLV1 default to 200 kbit/s: too blurry here
        container.start_encoding()  # writes the header even when there are no frames
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(digit_frames: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        name: encode(root / f"digits-{codec}.{ext}", digit_frames, codec)
        for name, (ext, codec) in CODECS.items()
    }


def nearest_source(decoded: np.ndarray, source: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The source frame nearest to each decoded frame, and every distance [decoded, source]
    (mean absolute difference in uint8 levels)."""
    diff = np.abs(decoded[:, None].astype(np.int16) - source[None].astype(np.int16))
    mad = diff.mean(axis=(2, 3, 4))
    return mad.argmin(axis=1).tolist(), mad


def assert_frames(decoded: np.ndarray, source: np.ndarray, expected: list[int]) -> None:
    """Decoded frame i is source frame expected[i]: within 2.5 levels of it (lossy coding
    costs about 1.5) and at least twice as close to it as to any other source frame."""
    assert decoded.dtype == np.uint8 and decoded.shape == (len(expected), SIZE, SIZE, 3)
    nearest, mad = nearest_source(decoded, source)
    assert nearest == expected
    rows = np.arange(len(expected))
    own = mad[rows, expected]
    assert own.max() < 2.5, f"decoded frames are far from their source ({own.max():.1f} levels)"
    mad[rows, expected] = np.inf
    assert (mad.min(axis=1) > 2 * own).all(), "a decoded frame is ambiguous"


# --------------------------------------------------------------------------- frame indices


def test_uniform_takes_segment_middles() -> None:
    assert frame_indices(30, 3) == [5, 15, 25]  # the peers' i * seg + seg // 2
    assert frame_indices(10, 2) == [2, 7]
    assert frame_indices(7, 7) == list(range(7))
    for n in range(1, 50):
        for k in range(1, min(n, 9) + 1):
            chosen = frame_indices(n, k, "uniform")
            bounds = [i * n // k for i in range(k + 1)]
            assert all(
                lo <= c < hi for c, lo, hi in zip(chosen, bounds[:-1], bounds[1:], strict=True)
            )
            assert len(chosen) == k
            assert chosen == frame_indices(n, k, "uniform", sample_generator(0, 0, 0))


def test_random_draws_within_segments_reproducibly() -> None:
    draws = [frame_indices(30, 3, "random", sample_generator(7, 0, i)) for i in range(300)]
    for s, (lo, hi) in enumerate([(0, 10), (10, 20), (20, 30)]):
        assert {d[s] for d in draws} == set(range(lo, hi)), "every frame of a segment is drawn"
    assert draws[0] == frame_indices(30, 3, "random", sample_generator(7, 0, 0))
    assert len({tuple(d) for d in draws[:20]}) > 10, "different seeds choose different frames"
    uneven = frame_indices(31, 4, "random", sample_generator(1, 2, 3))
    assert all(
        lo <= c < hi for c, lo, hi in zip(uneven, (0, 7, 15, 23), (7, 15, 23, 31), strict=True)
    )


def test_fewer_frames_than_k_repeat_each_frame_in_order() -> None:
    assert frame_indices(2, 5) == [0, 0, 1, 1, 1]
    assert frame_indices(1, 3) == [0, 0, 0]
    for n in range(1, 12):
        for k in range(n + 1, 25):
            chosen = frame_indices(n, k)
            counts = np.bincount(chosen, minlength=n)
            assert len(chosen) == k and chosen == sorted(chosen)
            assert set(counts) <= {k // n, k // n + 1}, (n, k, chosen)
            assert chosen == frame_indices(n, k, "random", sample_generator(0, 0, n * k))


def test_frame_indices_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="'middle'"):
        frame_indices(10, 2, "middle")
    with pytest.raises(ConfigError, match="at least 1"):
        frame_indices(10, 0)
    with pytest.raises(ConfigError, match="Generator"):
        frame_indices(10, 2, "random")
    with pytest.raises(DataFormatError, match="0 frames"):
        frame_indices(0, 2)


# --------------------------------------------------------------------------- video files


@pytest.mark.parametrize("codec", list(CODECS))
def test_video_frames_count_order_and_colour(
    codec: str, videos: dict[str, Path], digit_frames: np.ndarray
) -> None:
    path = videos[codec]
    # k = n: the identity, so a miscounted clip would pick other frames
    assert_frames(read_video_frames(path, N_FRAMES), digit_frames, list(range(N_FRAMES)))
    assert_frames(read_video_frames(path, 3), digit_frames, [5, 15, 25])
    # more frames than the clip has: each frame twice, in order
    doubled = [t for t in range(N_FRAMES) for _ in range(2)]
    assert_frames(read_video_frames(path, 2 * N_FRAMES), digit_frames, doubled)
    # a BGR decoder would be far off
    assert np.abs(digit_frames[5].astype(int) - digit_frames[5, ..., ::-1]).mean() > 20


@pytest.mark.parametrize("codec", list(CODECS))
def test_video_random_rule_is_seeded(
    codec: str, videos: dict[str, Path], digit_frames: np.ndarray
) -> None:
    chosen = set()
    for index in range(6):
        expected = frame_indices(N_FRAMES, 3, "random", sample_generator(3, 1, index))
        frames = read_video_frames(videos[codec], 3, "random", sample_generator(3, 1, index))
        assert_frames(frames, digit_frames, expected)
        again = read_video_frames(videos[codec], 3, "random", sample_generator(3, 1, index))
        assert np.array_equal(frames, again)
        chosen.add(tuple(expected))
    assert len(chosen) > 1


@pytest.mark.parametrize("codec", ["mp4-h264", "flv"])
def test_video_fps_resampling(
    codec: str, videos: dict[str, Path], digit_frames: np.ndarray
) -> None:
    path = videos[codec]
    # 10 fps source: 1 fps keeps frames 0, 10, 20 (OGM-GE's extraction), one per second
    assert_frames(read_video_frames(path, 3, fps=1), digit_frames, [0, 10, 20])
    assert_frames(read_video_frames(path, 5, fps=1), digit_frames, [0, 0, 10, 20, 20])
    # 5 fps: 15 resampled frames (0, 2, ..., 28); segment middles 2, 7, 12 -> 4, 14, 24
    assert_frames(read_video_frames(path, 3, fps=5), digit_frames, [4, 14, 24])
    # 2.5 fps: every 4th frame, 8 of them
    assert_frames(read_video_frames(path, 8, fps=2.5), digit_frames, list(range(0, 30, 4)))
    # 3 fps: resampled frame j is source frame floor(j * 10 / 3), 9 of them
    thirds = [0, 3, 6, 10, 13, 16, 20, 23, 26]
    assert_frames(read_video_frames(path, 9, fps=3), digit_frames, thirds)
    with pytest.raises(ConfigError, match="fps"):
        read_video_frames(path, 3, fps=0)


def test_video_index_overcount_within_slack_reselects(
    videos: dict[str, Path], digit_frames: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index listing a frame or two the decoder never outputs (edit lists) is tolerated:
    the frames are chosen again among those that decode."""
    probe = video_mod._probe
    monkeypatch.setattr(video_mod, "_probe", lambda av, p: (probe(av, p)[0] + 2, probe(av, p)[1]))
    path = videos["mp4-h264"]
    assert_frames(read_video_frames(path, N_FRAMES), digit_frames, list(range(N_FRAMES)))
    monkeypatch.setattr(video_mod, "_probe", lambda av, p: (probe(av, p)[0] + 3, probe(av, p)[1]))
    with pytest.raises(DataFormatError, match="lists 33 frames but only 30 decode"):
        read_video_frames(path, N_FRAMES)


def test_truncated_video_is_an_error(digit_frames: np.ndarray, tmp_path: Path) -> None:
    """A half-downloaded mp4 whose index (moov first) promises 30 frames is not read silently,
    whether it is cut inside a frame (the decoder fails) or between frames (the stream ends)."""
    av = pytest.importorskip("av", reason="PyAV (the media extra) is not installed")
    whole = encode(tmp_path / "whole.mp4", digit_frames, "libx264", movflags="faststart")
    with av.open(str(whole)) as container:
        starts = sorted(p.pos for p in container.demux(video=0) if p.size)
    data = whole.read_bytes()
    for name, length, match in [
        ("inside.mp4", starts[18] - 100, "cannot read video file"),
        ("between.mp4", starts[18], r"lists 30 frames but only \d+ decode; .* truncated"),
    ]:
        cut = tmp_path / name
        cut.write_bytes(data[:length])
        with pytest.raises(DataFormatError, match=match) as err:
            read_video_frames(cut, 3)
        assert str(cut) in str(err.value)


# --------------------------------------------------------------------------- frame folders


def write_frames(folder: Path, frames: np.ndarray, names: list[str]) -> None:
    """Frames under ``names``, created in a shuffled order so the directory order is not the
    name order."""
    image = pytest.importorskip("PIL.Image", reason="Pillow (the media extra) is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    order = list(range(len(names)))
    random.Random(0).shuffle(order)
    for i in order:
        image.fromarray(frames[i]).save(folder / names[i], quality=95)


def test_frame_folder_is_read_in_name_order(digit_frames: np.ndarray, tmp_path: Path) -> None:
    clip = tmp_path / "Image-01-FPS" / "1001_DFA_ANG_XX"
    names = [f"{t:05d}.jpg" for t in range(12)]
    write_frames(clip, digit_frames[:12], names)
    (clip / "notes.txt").write_text("not a frame")
    (clip / "thumbs.jpg").mkdir()  # a folder with a frame's suffix is not a frame
    assert [n for n in os.listdir(clip) if n[0].isdigit()] != names, "decoy order not built"

    assert_frames(read_frame_folder(clip, 12), digit_frames, list(range(12)))
    assert_frames(read_frame_folder(clip, 3), digit_frames, [2, 6, 10])
    expected = frame_indices(12, 3, "random", sample_generator(0, 4, 2))
    got = read_frame_folder(clip, 3, "random", sample_generator(0, 4, 2))
    assert_frames(got, digit_frames, expected)
    assert_frames(read_frame_folder(clip, 24), digit_frames, [t // 2 for t in range(24)])


def test_frame_folder_compares_numbers_in_names(digit_frames: np.ndarray, tmp_path: Path) -> None:
    """frame_2 comes before frame_10 (plain text order would put frame_10 third)."""
    names = [f"frame_{t + 1}.png" for t in range(12)]
    write_frames(tmp_path / "clip", digit_frames[:12], names)
    frames = read_frame_folder(tmp_path / "clip", 12)
    assert nearest_source(frames, digit_frames)[0] == list(range(12))
    assert np.array_equal(frames, digit_frames[:12]), "PNG frames are lossless"


def test_frame_folder_with_mixed_sizes_is_an_error(
    digit_frames: np.ndarray, tmp_path: Path
) -> None:
    write_frames(tmp_path / "clip", digit_frames[:2], ["00000.jpg", "00001.jpg"])
    image = pytest.importorskip("PIL.Image")
    image.fromarray(digit_frames[2][:48]).save(tmp_path / "clip" / "00002.jpg")
    with pytest.raises(DataFormatError, match=r"mixes frame sizes: .*00002\.jpg \[48, 96, 3\]"):
        read_frame_folder(tmp_path / "clip", 3)


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "LA", "CMYK"])
def test_read_image_converts_every_mode_to_rgb(
    mode: str, digit_frames: np.ndarray, tmp_path: Path
) -> None:
    image = pytest.importorskip("PIL.Image", reason="Pillow (the media extra) is not installed")
    img = image.fromarray(digit_frames[7]).convert(mode)
    path = tmp_path / ("frame.tiff" if mode == "CMYK" else "frame.png")
    img.save(path)
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == (SIZE, SIZE, 3) and got.flags.writeable
    assert np.array_equal(got, np.asarray(img.convert("RGB")))
    if mode in ("RGB", "RGBA"):
        assert np.array_equal(got, digit_frames[7])


def test_read_image_jpeg_is_close_to_its_source(digit_frames: np.ndarray, tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image", reason="Pillow (the media extra) is not installed")
    image.fromarray(digit_frames[3]).save(tmp_path / "d.jpg", quality=95)
    got = read_image(tmp_path / "d.jpg")
    assert nearest_source(got[None], digit_frames)[0] == [3]


# --------------------------------------------------------------------------- errors


def audio_only_m4a(path: Path, fsdd_root: Path) -> Path:
    """A real FSDD recording encoded as AAC in an mp4 container, with no video stream."""
    av = pytest.importorskip("av", reason="PyAV (the media extra) is not installed")
    from unipair.data.audio import read_wav

    wave = read_wav(fsdd_root / "0_george_0.wav", target_rate=8000)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave[None], format="flt", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_missing_paths_are_data_not_found(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    for read, path in [
        (lambda p: read_video_frames(p, 3), gone / "clip.mp4"),
        (lambda p: read_frame_folder(p, 3), gone / "clip"),
        (read_image, gone / "frame.jpg"),
    ]:
        with pytest.raises(DataNotFoundError, match=re.escape(str(path))):
            read(path)


@pytest.mark.parametrize(
    "case",
    [
        "random-bytes-mp4",
        "audio-only-m4a",
        "zero-frame-avi",
        "truncated-png",
        "16-bit-png",
        "not-a-jpeg",
    ],
)
def test_bad_files_are_data_format_errors(
    case: str, tmp_path: Path, fsdd_root: Path, digit_frames: np.ndarray
) -> None:
    pytest.importorskip("av", reason="PyAV (the media extra) is not installed")
    image = pytest.importorskip("PIL.Image", reason="Pillow (the media extra) is not installed")
    rng = np.random.default_rng(0)
    if case == "random-bytes-mp4":
        path = tmp_path / "clip.mp4"
        path.write_bytes(rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes())
        read, match = (lambda p: read_video_frames(p, 3)), "cannot read video file"
    elif case == "audio-only-m4a":
        path = audio_only_m4a(tmp_path / "speech.m4a", fsdd_root)
        read, match = (lambda p: read_video_frames(p, 3)), "no video stream .streams: audio"
    elif case == "zero-frame-avi":
        path = encode(tmp_path / "empty.avi", digit_frames[:0], "mpeg4")
        read, match = (lambda p: read_video_frames(p, 3)), "holds no frames"
    elif case == "truncated-png":
        path = tmp_path / "frame.png"
        image.fromarray(digit_frames[0]).save(path)
        path.write_bytes(path.read_bytes()[:300])
        read, match = read_image, "cannot read image file"
    elif case == "16-bit-png":
        path = tmp_path / "deep.png"
        image.fromarray(digit_frames[0, ..., 0].astype(np.uint16) * 257).save(path)
        read, match = read_image, "more than 8 bits"
    else:
        path = tmp_path / "frame.jpg"
        path.write_bytes(rng.integers(0, 256, 5_000, dtype=np.uint8).tobytes())
        read, match = read_image, "cannot read image file"
    with pytest.raises(DataFormatError, match=match) as err:
        read(path)
    assert str(path) in str(err.value) and isinstance(err.value, UnipairError)


@pytest.mark.parametrize("content", ["nothing", "no-images"])
def test_folder_without_frames_is_a_data_format_error(content: str, tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    clip.mkdir()
    if content == "no-images":
        (clip / "frames.txt").write_text("00000.jpg")
        (clip / "00000.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataFormatError, match=re.escape(f"{clip} holds no frames")):
        read_frame_folder(clip, 3)


def test_missing_extras_name_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\0")
    (tmp_path / "frame.jpg").write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"PyAV.*pip install 'unipair\[media\]'"):
        read_video_frames(tmp_path / "clip.mp4", 3)
    with pytest.raises(ImportError, match=r"Pillow.*pip install 'unipair\[media\]'"):
        read_image(tmp_path / "frame.jpg")


def test_importing_the_modules_loads_no_decoder() -> None:
    code = (
        "import sys, unipair.data.media.video, unipair.data.media.image, "
        "unipair.data.media.transforms; print(sorted({'av', 'PIL'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- transforms


def test_transform_shapes_and_dtypes(digit_frames: np.ndarray) -> None:
    clip, image = digit_frames[:3], digit_frames[0]
    gen = sample_generator(0, 0, 0)
    for transform in (TrainTransform(), EvalTransform(), EvalTransform(mode="center_crop")):
        out = transform(clip, gen)
        assert out.dtype == torch.float32 and out.shape == (3, 3, 224, 224)
        # channels-last in memory, as decoded: a batch of them is torch's channels_last_3d
        assert out[None].is_contiguous(memory_format=torch.channels_last_3d)
        one = transform(image, gen)
        assert one.shape == (3, 224, 224)
        assert one[None].is_contiguous(memory_format=torch.channels_last)
    assert TrainTransform(size=(32, 48))(clip, gen).shape == (3, 3, 32, 48)
    assert EvalTransform(size=[40, 24])(image).shape == (3, 40, 24)


def test_eval_at_the_input_size_is_exact_normalisation(digit_frames: np.ndarray) -> None:
    """No resampling at the same size: the output is (x / 255 - mean) / std per channel, in RGB
    order, with frames along the second axis."""
    clip = digit_frames[:4]
    out = EvalTransform(size=SIZE)(clip)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    expected = (torch.from_numpy(clip).permute(3, 0, 1, 2) / 255.0 - mean) / std
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    plain = EvalTransform(size=SIZE, mean=(0, 0, 0), std=(1, 1, 1))(clip[1])
    torch.testing.assert_close(plain * 255, torch.from_numpy(clip[1]).permute(2, 0, 1).float())
    # the transforms skip resampling at scale 1: torch's antialiased filters are exact there
    u8 = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    for mode in ("bilinear", "bicubic"):
        same = torch.nn.functional.interpolate(u8, size=(SIZE, SIZE), mode=mode, antialias=True)
        assert torch.equal(same, u8), mode


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [224, 40])
def test_eval_resize_matches_pillow(
    interpolation: str, size: int, digit_frames: np.ndarray
) -> None:
    """Upsampling and antialiased downsampling agree with Pillow's filters to a level or two."""
    image = pytest.importorskip("PIL.Image", reason="Pillow (the media extra) is not installed")
    filt = {"bilinear": image.BILINEAR, "bicubic": image.BICUBIC}[interpolation]
    frame = digit_frames[11]
    oracle = np.asarray(image.fromarray(frame).resize((size, size), filt)).astype(np.float32)
    plain = EvalTransform(size=size, interpolation=interpolation, mean=(0, 0, 0), std=(1, 1, 1))
    got = (plain(frame) * 255).permute(1, 2, 0).numpy()
    assert np.abs(got - oracle).max() <= 2.0
    assert np.abs(got - oracle).mean() < 0.2


def test_eval_center_crop_matches_resize_then_crop(digit_frames: np.ndarray) -> None:
    image = pytest.importorskip("PIL.Image", reason="Pillow (the media extra) is not installed")
    wide = np.ascontiguousarray(digit_frames[8][10:74])  # 64 x 96
    # torchvision: Resize(80) -> 80 x int(80 * 96 / 64) = 80 x 120, CenterCrop(64)
    resized = np.asarray(image.fromarray(wide).resize((120, 80), image.BILINEAR))
    oracle = resized[8:72, 28:92].astype(np.float32)
    t = EvalTransform(size=64, mode="center_crop", shorter=80, mean=(0, 0, 0), std=(1, 1, 1))
    got = (t(wide) * 255).permute(1, 2, 0).numpy()
    assert np.abs(got - oracle).max() <= 2.0
    tall = np.ascontiguousarray(wide.transpose(1, 0, 2))
    assert t(tall).shape == (3, 64, 64)


def test_train_is_seeded_by_the_generator_only(digit_frames: np.ndarray) -> None:
    clip = digit_frames[:3]
    train = TrainTransform(size=64)
    torch.manual_seed(1)
    a = train(clip, sample_generator(0, 0, 5))
    torch.manual_seed(2)  # the global RNG plays no part
    b = train(clip, sample_generator(0, 0, 5))
    assert torch.equal(a, b)
    outs = [train(clip, sample_generator(0, epoch, 5)) for epoch in range(5)]
    assert all(not torch.equal(outs[0], o) for o in outs[1:])
    with pytest.raises(ConfigError, match="Generator"):
        train(clip)


def test_eval_is_deterministic(digit_frames: np.ndarray) -> None:
    clip = digit_frames[:3]
    for t in (EvalTransform(size=64), EvalTransform(size=64, mode="center_crop", shorter=72)):
        ref = t(clip)
        assert torch.equal(ref, t(clip, sample_generator(0, 0, 1)))
        assert torch.equal(ref, t(clip, sample_generator(9, 9, 9)))


def test_train_crop_and_flip_are_shared_by_the_frames_of_a_clip(
    digit_frames: np.ndarray,
) -> None:
    clip = digit_frames[:4]
    train = TrainTransform(size=48)
    for index in range(10):
        together = train(clip, sample_generator(1, 0, index))
        for j in range(4):
            alone = train(clip[j], sample_generator(1, 0, index))
            assert torch.equal(together[:, j], alone)
    # whole-frame crops: each output is the resized clip or its mirror, never a mix
    whole = TrainTransform(size=48, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    plain = EvalTransform(size=48)(clip)
    mirrored = 0
    for index in range(40):
        out = whole(clip, sample_generator(2, 0, index))
        assert torch.equal(out, plain) or torch.equal(out, plain.flip(-1))
        mirrored += torch.equal(out, plain.flip(-1))
    assert 8 <= mirrored <= 32, mirrored
    never = TrainTransform(size=48, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0)
    assert torch.equal(never(clip, sample_generator(0, 0, 0)), plain)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_train_is_crop_then_resize_then_flip(interpolation: str, digit_frames: np.ndarray) -> None:
    """torchvision's order, to the byte, although the transform mirrors the crop first."""
    clip = digit_frames[:3]
    train = TrainTransform(size=(40, 56), interpolation=interpolation, mean=(0, 0, 0),
                           std=(1 / 255,) * 3)  # fmt: skip
    u8 = torch.from_numpy(clip).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    mirrored = 0
    for index in range(24):
        gen = sample_generator(5, 0, index)
        top, left, h, w = train.crop_box(*clip.shape[1:3], gen)
        mirror = torch.rand((), generator=gen, dtype=torch.float64).item() < 0.5
        crop = u8[..., top : top + h, left : left + w].contiguous(memory_format=torch.channels_last)
        expected = torch.nn.functional.interpolate(
            crop, size=(40, 56), mode=interpolation, antialias=True
        )
        expected = (expected.flip(-1) if mirror else expected).permute(1, 0, 2, 3).float()
        assert torch.equal(train(clip, sample_generator(5, 0, index)), expected), index
        mirrored += mirror
    assert 0 < mirrored < 24


def test_crop_box_follows_scale_and_ratio() -> None:
    train = TrainTransform(scale=(0.2, 0.6), ratio=(0.5, 2.0))
    areas = []
    for index in range(300):
        top, left, h, w = train.crop_box(120, 160, sample_generator(0, 0, index))
        assert top >= 0 and left >= 0 and top + h <= 120 and left + w <= 160
        assert 0.45 <= w / h <= 2.2
        areas.append(h * w / (120 * 160))
    assert 0.19 <= min(areas) < 0.25 and 0.55 < max(areas) <= 0.61
    # no box of the allowed ratios fits a 10 x 200 strip: torchvision's central fallback
    assert TrainTransform().crop_box(10, 200, sample_generator(0, 0, 0)) == (0, 93, 10, 13)


def test_sample_generator_is_a_pure_function_of_its_triple() -> None:
    def first(g: torch.Generator) -> list[int]:
        return torch.randint(0, 2**31, (4,), generator=g).tolist()

    triples = [(s, e, i) for s in range(3) for e in range(3) for i in range(30)]
    forward = {t: first(sample_generator(*t)) for t in triples}
    torch.manual_seed(123)
    backward = {t: first(sample_generator(*t)) for t in reversed(triples)}
    assert forward == backward
    assert len({tuple(v) for v in forward.values()}) == len(triples)
    assert sample_generator(0, 1, 2).initial_seed() != sample_generator(0, 2, 1).initial_seed()
    state = np.random.SeedSequence([5, 6, 7]).generate_state(1, dtype=np.uint64)[0]
    assert sample_generator(5, 6, 7).initial_seed() == int(state)  # the documented formula
    with pytest.raises(ConfigError, match="epoch"):
        sample_generator(0, -1, 0)


def test_create_transform_and_params_round_trip() -> None:
    for name, options in [
        ("train", {"size": 112, "scale": [0.3, 1.0], "flip": 0.0}),
        ("eval", {"size": [96, 128], "mode": "center_crop", "shorter": 160}),
        ("eval", {}),
    ]:
        t = create_transform(name, **options)
        params = json.loads(json.dumps(t.params()))
        assert params["name"] == name
        assert create_transform(**params).params() == params
        clone = pickle.loads(pickle.dumps(t))  # DataLoader workers may receive it pickled
        frame = np.arange(40 * 60 * 3, dtype=np.uint8).reshape(40, 60, 3)
        assert torch.equal(
            clone(frame, sample_generator(0, 0, 0)), t(frame, sample_generator(0, 0, 0))
        )
    assert TrainTransform().params()["scale"] == [0.08, 1.0]
    assert EvalTransform().params() != TrainTransform().params()


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("train", {"sizes": 224}, "'sizes'"),
        ("eval", {"scale": (0.1, 1.0)}, "'scale'"),
        ("train", {"size": 0}, "size"),
        ("train", {"size": 22.5}, "size"),
        ("train", {"scale": (0.6, 0.2)}, "scale"),
        ("train", {"ratio": (0.0, 1.0)}, "ratio"),
        ("train", {"flip": 1.5}, "flip"),
        ("train", {"interpolation": "nearest"}, "interpolation"),
        ("eval", {"std": (0.2, 0.0, 0.2)}, "std"),
        ("eval", {"mean": (0.5, 0.5)}, "mean"),
        ("eval", {"mode": "crop"}, "mode"),
        ("eval", {"shorter": 256}, "shorter"),
        ("eval", {"mode": "center_crop", "shorter": 200}, "shorter"),
    ],
)
def test_bad_transform_options_are_config_errors(name: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_transform(name, **options)


def test_bad_transform_names_and_inputs() -> None:
    with pytest.raises(UnknownNameError, match="'test'"):
        create_transform("test")
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), [[0, 0, 0]]):
        with pytest.raises(DataFormatError, match=r"uint8 frames \[H, W, 3\]"):
            EvalTransform()(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["14.2.0", "19.0.2"])
def test_videos_open_with_every_pyav_release(version: str) -> None:
    """PyAV 19 dropped ``av.open``'s ``metadata_errors`` option: passing it there made every
    video fail with a TypeError (found on the GPU machine, which has PyAV 19)."""
    from types import SimpleNamespace

    from unipair.data.media.video import _open

    calls = []

    def fake_open(path: str, **options):
        if version.startswith("19") and options:
            raise TypeError(f"open() got an unexpected keyword argument {next(iter(options))!r}")
        calls.append(options)
        return path

    av = SimpleNamespace(__version__=version, open=fake_open)
    assert _open(av, Path("clip.mp4")) == "clip.mp4"  # type: ignore[arg-type]
    assert calls == [{} if version.startswith("19") else {"metadata_errors": "ignore"}]
