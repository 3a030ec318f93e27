"""UCI Multiple Features ("handwritten"): 2000 digits seen through six feature sets.

The embedded default dataset. The package ships the six views as one compressed file built by
``scripts/build_handwritten.py`` from the UCI CSVs (CC BY 4.0; see DATA_LICENSE), so it loads with
no path and no network. Passing ``root`` reads the CSVs instead.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np

from unipair.data.assemble import assemble
from unipair.data.dataset import MultimodalData
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["VIEWS", "load_handwritten", "read_handwritten_csvs"]

#: view name -> feature count, in the order of the UCI documentation
VIEWS = {"pix": 240, "fou": 76, "fac": 216, "zer": 47, "kar": 64, "mor": 6}
ASSET = "handwritten.npz"


def read_handwritten_csvs(root: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read ``mfeat-{view}.csv`` files: a header row of column indices, the label last."""
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(
            f"handwritten root {root} is not a directory; expected mfeat-pix.csv ... "
            "mfeat-mor.csv (header row of column indices, label in the last column)"
        )
    views: dict[str, np.ndarray] = {}
    labels = np.empty(0, dtype=np.int64)
    for view, dim in VIEWS.items():
        path = root / f"mfeat-{view}.csv"
        if not path.is_file():
            raise DataNotFoundError(f"missing {path}; expected one CSV per view: mfeat-<view>.csv")
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        if table.ndim != 2 or table.shape[1] != dim + 1:
            raise DataFormatError(f"{path}: expected {dim} feature columns plus a label column")
        y = table[:, -1].astype(np.int64)
        if views and not np.array_equal(labels, y):
            raise DataFormatError(f"{path}: labels are not row-aligned with the other views")
        views[view], labels = table[:, :-1].astype(np.float32), y
    return views, labels


def _read_asset() -> tuple[dict[str, np.ndarray], np.ndarray, str]:
    blob = resources.files("unipair.data.assets").joinpath(ASSET).read_bytes()
    import io

    with np.load(io.BytesIO(blob)) as z:
        views = {v: z[v] for v in VIEWS}
        labels = z["label"].astype(np.int64)
    return views, labels, hashlib.sha256(blob).hexdigest()[:16]


def load_handwritten(
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    standardize: bool = True,
    views: list[str] | None = None,
) -> MultimodalData:
    """Six views, 10 balanced classes; stratified 70/10/20 split by default."""
    if root is None:
        data, labels, source = _read_asset()
    else:
        data, labels = read_handwritten_csvs(root)
        source = f"csv:{Path(root).resolve()}"
    if views is not None:
        unknown = sorted(set(views) - set(VIEWS))
        if unknown or len(views) < 2:
            raise ConfigError(f"views must name at least two of {list(VIEWS)}; got {views}")
        data = {v: data[v] for v in views}
    return assemble(
        "handwritten",
        data,
        labels,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        standardize=standardize,
        num_classes=10,
        source=source,
        info={"source": "UCI Multiple Features (CC BY 4.0)"},
    )
