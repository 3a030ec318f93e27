"""Data-layer throughput and memory on CREMA-D-like media.

Generates clips like CREMA-D's (2.5 s of 16 kHz mono wav, a 2.5 s 30 fps 480x360 video as mp4)
and a manifest reading them the way MLA does: Kaldi fbank [1, 1024, 128] and 3 frames at 224
with the training crop and flip. Then, each in a fresh process (one torch thread per process):

1. samples/s over the training split, from the files with 0, 1 and 2 DataLoader workers, and
   from the prepared cache (``unipair prepare``) with the same workers: once with the frames
   turned into floats in the main process (training on a CPU) and once as the uint8 batches a
   GPU receives (it converts them itself). The manifest lists the clips 10 times (every row
   decoded anew): epochs of 18 batches, so the rate is the pipeline's, not the time its
   workers take to deliver an epoch's first batch (what 2-batch epochs measured before);
2. peak RSS (one process, no workers) while iterating a manifest of N rows and one of 12 N
   rows (the clips listed 10 and 120 times: decoded anew every time); the larger decodes to
   more than 10x the process's peak memory.

Targets: prepared-cache throughput >= 10x the file-decoding throughput with the same workers;
peak RSS independent of the dataset's size (within 10% between N and 12 N rows).

    python bench/bench_data.py [--clips 48] [--keep DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODALITIES = {
    "audio": {"kind": "audio", "features": "fbank"},
    "video": {"kind": "video", "frames": 3, "size": 224},
}
RATE, SECONDS, FPS, WIDTH, HEIGHT = 16_000, 2.5, 30, 480, 360


def make_media(folder: Path, clips: int) -> Path:
    """``clips`` wav + mp4 pairs of six classes, and their manifest."""
    import av
    import soundfile as sf

    rng = np.random.default_rng(0)
    (folder / "AudioWAV").mkdir(parents=True, exist_ok=True)
    (folder / "VideoFlash").mkdir(exist_ok=True)
    rows = []
    t = np.arange(int(RATE * SECONDS)) / RATE
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for i in range(clips):
        label = i % 6
        name = f"{1001 + i}_clip_{label}"
        tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * label) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(folder / "AudioWAV" / f"{name}.wav", tone.astype(np.float32), RATE)
        with av.open(str(folder / "VideoFlash" / f"{name}.mp4"), mode="w") as container:
            stream = container.add_stream("mpeg4", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
            for f in range(int(FPS * SECONDS)):
                frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
                frame[..., label % 3] = ((xx + 6 * f + 40 * label) % 255).astype(np.uint8)
                frame[..., 2] = (yy % 200).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        rows.append({"audio": f"AudioWAV/{name}.wav", "video": f"VideoFlash/{name}.mp4",
                     "label": str(label)})  # fmt: skip
    return write_manifest(folder / "manifest.csv", rows)


def write_manifest(path: Path, rows: list[dict[str, str]], repeat: int = 1) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["audio", "video", "label"])
        writer.writeheader()
        for _ in range(repeat):
            writer.writerows(rows)
    return path


def child(dataset: str, workers: int, epochs: int, floats: bool) -> None:
    """Iterate the training split ``epochs`` times (the first is a warm-up); print JSON.
    ``floats``: also turn the uint8 frames into floats here, as ``on_device`` does on a CPU."""
    import resource

    import torch

    from unipair.data.registry import create
    from unipair.engine.predict import make_loader
    from unipair.engine.samplers import GlobalBatchSampler

    torch.set_num_threads(1)
    options = {"val_fraction": 0.2, "test_fraction": 0.2}
    if dataset.endswith(".csv"):
        options["modalities"] = MODALITIES
    data = create(dataset, **options)
    sampler = GlobalBatchSampler(len(data.train), 16, seed=0)
    loader = make_loader(data.train, sampler, workers)
    rates = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        t0, n = time.perf_counter(), 0
        for batch in loader:
            n += len(batch.dequantize() if floats else batch)
        rates.append(n / (time.perf_counter() - t0))
    rss = peak_rss()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    decoded = len(data.train) * (4 * 1024 * 128 + 4 * 3 * 3 * 224 * 224)
    print(json.dumps({"rate": float(np.median(rates[1:] or rates)), "rss": max(rss, children),
                      "decoded": decoded, "rows": len(data.train)}))  # fmt: skip


def peak_rss() -> int:
    """This process's peak resident memory, bytes. Linux's ``ru_maxrss`` also counts the
    parent's memory at the fork that started this process (kept across ``exec``), so the
    memory map's own high-water mark is read where there is one."""
    import resource

    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(dataset: Path, workers: int, epochs: int = 3, floats: bool = True) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(dataset), "--workers", str(workers),
         "--epochs", str(epochs), *(["--floats"] if floats else [])],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="data-layer throughput and memory")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--keep", help="folder for the generated media (default: temporary)")
    parser.add_argument("--repeats", type=int, default=3, help="medians over this many runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--floats", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workers, args.epochs, args.floats)
        return
    folder = Path(args.keep or tempfile.mkdtemp(prefix="unipair-data-"))
    t0 = time.perf_counter()
    manifest = make_media(folder, args.clips)
    print(f"{args.clips} clips (2.5 s 16 kHz wav + 30 fps 480x360 mp4) in {folder} "
          f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    from unipair.data.prepared import prepare

    t0 = time.perf_counter()
    options = {"modalities": MODALITIES, "val_fraction": 0.2, "test_fraction": 0.2}
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    repeated = write_manifest(folder / "manifest10.csv", rows, 10)
    cache = prepare(repeated, folder / "prepared10", options, workers=2)
    print(f"unipair prepare of {10 * args.clips} rows (2 workers): "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    # frames reach the device as uint8; "floats on the CPU" adds their conversion in the main
    # process (what on_device does without a GPU), "to the device" leaves it to the GPU
    for floats, where in ((True, "floats on the CPU"), (False, "uint8 to the device")):
        print(f"\nbatches as {where}")
        print(f"{'source':<16}{'workers':>8}{'samples/s':>11}{'x files':>9}  target")
        for workers in (0, 1, 2):
            # alternated and repeated: these VMs' speed drifts by tens of percent
            rates: dict[Path, list[float]] = {repeated: [], cache: []}
            for _ in range(args.repeats):
                for source in rates:
                    rates[source].append(run_child(source, workers, floats=floats)["rate"])
            files, cached = (float(np.median(rates[source])) for source in (repeated, cache))
            print(f"{'files':<16}{workers:>8}{files:>11.1f}")
            ratio = cached / files
            print(f"{'prepared cache':<16}{workers:>8}{cached:>11.1f}{ratio:>9.1f}  >= 10x "
                  f"{'met' if ratio >= 10 else 'MISSED'}")  # fmt: skip
    small = run_child(repeated, 0, epochs=1)
    big = run_child(write_manifest(folder / "manifest120.csv", rows, 120), 0, epochs=1)
    growth = big["rss"] / small["rss"] - 1
    for name, r in (("N rows", small), ("12 N rows", big)):
        print(
            f"peak RSS, {name:<10} {r['rss'] / 1e9:.2f} GB  (decoded training split "
            f"{r['decoded'] / 1e9:.2f} GB = {r['decoded'] / r['rss']:.1f}x the peak)"
        )
    print(
        f"growth from N to 12 N rows: {growth:+.1%}  (target within 10%: "
        f"{'met' if abs(growth) <= 0.10 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
