"""Build the embedded default dataset from the UCI Multiple Features CSVs.

    python scripts/build_handwritten.py [../shared/data/handwritten]

Writes src/unipair/data/assets/handwritten.npz (float32 views + int64 labels, compressed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from unipair.data.handwritten import read_handwritten_csvs
from unipair.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/handwritten"
    views, labels = read_handwritten_csvs(src)
    out = ROOT / "src/unipair/data/assets/handwritten.npz"
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **views, label=labels.astype(np.int64))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) from {src}")


if __name__ == "__main__":
    main()
