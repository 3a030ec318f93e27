"""Builds a small audio-visual manifest from real data, in the layout users have on disk.

Each row pairs a real FSDD recording (wav) of digit d with a real MNIST image of d written as a
PNG and a short video of that digit moving across the frame, encoded with PyAV (mp4 for even
rows, flv for odd ones), so every reader (soundfile, PyAV video, Pillow) runs on real files.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from unipair.data.idx import read_idx

SIDE = 32  # video frame side, pixels


def _digit_images(mnist_root: Path) -> dict[int, list[np.ndarray]]:
    images = read_idx(mnist_root / "t10k-images-idx3-ubyte.gz", ndim=3)
    labels = read_idx(mnist_root / "t10k-labels-idx1-ubyte.gz", ndim=1)
    out: dict[int, list[np.ndarray]] = {d: [] for d in range(10)}
    for img, label in zip(images, labels, strict=True):
        if len(out[int(label)]) < 20:
            out[int(label)].append(img)
    return out


def write_video(path: Path, digit: np.ndarray, frames: int = 12, fps: int = 10) -> None:
    """The digit moving left to right across a dark SIDE x SIDE frame."""
    import av

    codec = "flv" if path.suffix == ".flv" else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            canvas = np.zeros((SIDE, SIDE, 3), np.uint8)
            x = round(t * (SIDE - 28) / max(frames - 1, 1))
            canvas[2:30, x : x + 28] = digit[:, :, None]
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def build(
    root: Path, fsdd_root: Path, mnist_root: Path, per_class: int = 6, classes: int = 10
) -> Path:
    """Write ``root/manifest.csv`` with audio, image and video columns; returns its path."""
    from PIL import Image

    digits = _digit_images(mnist_root)
    for sub in ("audio", "image", "video"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for d in range(classes):
        for k in range(per_class):
            wav = fsdd_root / f"{d}_jackson_{k}.wav"
            shutil.copy(wav, root / "audio" / wav.name)
            img = root / "image" / f"{d}_{k}.png"
            Image.fromarray(digits[d][k]).save(img)
            video = root / "video" / f"{d}_{k}.{'mp4' if k % 2 == 0 else 'flv'}"
            write_video(video, digits[d][k + 10])
            rows.append(
                {
                    "id": f"{d}_{k}",
                    "audio": f"audio/{wav.name}",
                    "image": f"image/{img.name}",
                    "video": f"video/{video.name}",
                    "label": str(d),
                    "group": "jackson",
                }
            )
    path = root / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "audio", "image", "video", "label"])
        writer.writeheader()
        writer.writerows([{k: v for k, v in r.items() if k != "group"} for r in rows])
    return path


#: small readers: 8 kHz log-mel audio, 32-pixel images and 2-frame clips
MODALITIES = {
    "audio": {
        "kind": "audio",
        "features": "logmel",
        "feature_options": {"sample_rate": 8000, "n_mels": 32, "frames": 40},
        "duration": 1.0,
    },
    "image": {"kind": "image", "size": 32},
    "video": {"kind": "video", "frames": 2, "size": 32},
}
MODEL = {
    "width": 32,
    "encoders": {
        "audio": {"name": "cnn", "options": {"channels": [8, 16], "dropout": 0.0}},
        "image": {"name": "cnn", "options": {"channels": [8, 16], "dropout": 0.0}},
        "video": {"name": "resnet18"},
    },
}
