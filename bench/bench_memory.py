"""Peak memory of loading a bring-your-own ``.npz``: ``datasets show`` and a 1-epoch ``train``.

Generates float32 ``.npz`` files of about 1 GB and 2 GB of array data (two modalities of 2,048
features each, three classes), then runs each command in a fresh process and reads that
process's peak resident set size (``ru_maxrss``). Targets: peak at most 1.5x the file's array
bytes, and growth linear in data size (the 2 GB peak minus the 1 GB peak is about 1 GB).

    python bench/bench_memory.py [--sizes 1,2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FEATURES = 2048
#: runs a command and prints its peak RSS in bytes (Linux reports ru_maxrss in KiB)
PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); sys.exit(r.returncode)"
)


def make_npz(path: Path, gigabytes: float) -> int:
    """A float32 file with two modalities; returns the bytes of its arrays."""
    rows = int(gigabytes * 1e9 / (2 * FEATURES * 4))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, rows)
    arrays = {}
    for m in ("a", "b"):
        x = np.empty((rows, FEATURES), np.float32)
        for start in range(0, rows, 20_000):  # generate in chunks: the bench's own peak is low
            stop = min(start + 20_000, rows)
            x[start:stop] = rng.standard_normal((stop - start, FEATURES), np.float32)
            x[start:stop, :8] += labels[start:stop, None]
        arrays[m] = x
    with open(path, "wb") as f:
        np.savez(f, **arrays, label=labels)
    return sum(a.nbytes for a in arrays.values()) + labels.nbytes


def peak(*command: str) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PEAK, *command],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{command} failed:\n{out.stderr[-3000:]}")
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="peak memory of loading an .npz")
    parser.add_argument("--sizes", default="1,2", help="GB of array data per file")
    parser.add_argument("--keep", help="folder for the generated files (default: a temp dir)")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="unipair-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    unipair = [sys.executable, "-m", "unipair"]
    base = peak(sys.executable, "-c", "import unipair.engine.trainer")
    print(f"interpreter with torch and Lightning imported: {base / 1e9:.2f} GB")
    print(f"{'file':<10}{'arrays GB':>10}{'command':>16}{'peak GB':>10}{'x arrays':>10}  target")
    peaks: dict[str, list[tuple[int, int]]] = {"datasets show": [], "train 1 epoch": []}
    for size in [float(s) for s in args.sizes.split(",")]:
        path = folder / f"data{size:g}gb.npz"
        data_bytes = make_npz(path, size)
        train = [
            *unipair, "train", "--dataset", str(path), "--epochs", "1",
            "--batch-size", "256", "--accelerator", "cpu", "--out", str(folder / "runs"),
            "--set", "logging.progress=none", "--set", "logging.save_predictions=false",
            "--set", "model.width=32",
            "--set", "model.encoders={'*': {name: mlp, options: {hidden: [32]}}}",
        ]  # fmt: skip
        show = [*unipair, "datasets", "show", str(path)]
        commands = {"datasets show": show, "train 1 epoch": train}
        for name, command in commands.items():
            p = peak(*command)
            peaks[name].append((data_bytes, p))
            ratio = p / data_bytes
            print(
                f"{path.name:<10}{data_bytes / 1e9:>10.2f}{name:>16}{p / 1e9:>10.2f}"
                f"{ratio:>10.2f}  <= 1.5x {'met' if ratio <= 1.5 else 'MISSED'}"
            )
        path.unlink()
    for name, points in peaks.items():
        if len(points) >= 2:
            (d0, p0), (d1, p1) = points[0], points[-1]
            print(f"{name}: extra peak per extra GB of arrays {(p1 - p0) / (d1 - d0):.2f} GB/GB")


if __name__ == "__main__":
    main()
