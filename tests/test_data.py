"""Data layer: the embedded handwritten dataset, splits, standardisation, npz validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unipair import datasets
from unipair.data.dataset import SPLITS
from unipair.data.handwritten import VIEWS, read_handwritten_csvs
from unipair.data.npz import NpzFormatError
from unipair.data.synthetic import load_synthetic
from unipair.errors import ConfigError


@pytest.fixture(scope="module")
def handwritten():
    return datasets.create("handwritten")


def test_handwritten_embedded_matches_source_csvs(data_root: Path) -> None:
    views, labels = read_handwritten_csvs(data_root / "handwritten")
    raw = datasets.create("handwritten", standardize=False)
    assert set(raw.spec.names) == set(VIEWS)
    # reassemble all 2000 rows from the three splits and compare to the CSVs row by row
    for split in (raw.train, raw.val, raw.test):
        rows = split.index.numpy()
        np.testing.assert_array_equal(split.labels.numpy(), labels[rows])
        for v in VIEWS:
            np.testing.assert_allclose(split.inputs[v].numpy(), views[v][rows], rtol=1e-6)


def test_handwritten_shape_balance_and_disjoint_splits(handwritten) -> None:
    d = handwritten.describe()
    assert d["modalities"] == {v: [n] for v, n in VIEWS.items()}
    assert sum(d["splits"].values()) == 2000
    total = np.sum([d["class_counts"][s] for s in ("train", "val", "test")], axis=0)
    assert total.tolist() == [200] * 10
    for s in ("train", "val", "test"):  # stratified: every split balanced
        assert len(set(d["class_counts"][s])) == 1
    idx = [set(handwritten.split(s).index.tolist()) for s in ("train", "val", "test")]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])


def test_splits_are_deterministic_per_seed() -> None:
    a, b = datasets.create("handwritten", seed=3), datasets.create("handwritten", seed=3)
    c = datasets.create("handwritten", seed=4)
    assert torch.equal(a.test.index, b.test.index) and a.fingerprint == b.fingerprint
    assert not torch.equal(a.test.index, c.test.index) and a.fingerprint != c.fingerprint


def test_standardisation_statistics_come_from_train_only(handwritten) -> None:
    x = handwritten.train.inputs["fac"]
    assert torch.allclose(x.mean(0), torch.zeros(x.shape[1]), atol=1e-4)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(x.shape[1]), atol=1e-3)
    # the test split is transformed with train statistics, so it is not exactly standard
    t = handwritten.test.inputs["fac"]
    assert not torch.allclose(t.mean(0), torch.zeros(t.shape[1]), atol=1e-3)


def test_unknown_dataset_and_option_are_named() -> None:
    with pytest.raises(KeyError, match=r"handwriten.*Did you mean 'handwritten'"):
        datasets.create("handwriten")
    with pytest.raises(ConfigError, match=r"no option.*'colour'"):
        datasets.create("handwritten", colour=1)


def test_handwritten_root_error_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"mfeat-pix\.csv"):
        datasets.create("handwritten", root=str(tmp_path))


# ---- npz: bring your own data ------------------------------------------------------------


def _write(path: Path, **arrays) -> str:
    with open(path, "wb") as f:  # np.savez(path) would append .npz to MINE.NPZ
        np.savez(f, **arrays)
    return str(path)


def _good(n: int = 60, c: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % c
    return {
        "audio": rng.normal(size=(n, 1, 8, 5)).astype(np.float32) + y[:, None, None, None],
        "text": rng.normal(size=(n, 7)).astype(np.float32),
        "label": y,
    }


def test_npz_roundtrip_with_and_without_split(tmp_path: Path) -> None:
    arrays = _good()
    d = datasets.create(_write(tmp_path / "mine.npz", **arrays), seed=1)
    assert d.spec.names == ["audio", "text"] and d.spec["audio"].shape == (1, 8, 5)
    assert d.spec.num_classes == 3 and sum(len(d.split(s)) for s in ("train", "val", "test")) == 60
    split = np.array(["train"] * 40 + ["val"] * 8 + ["test"] * 12)
    d2 = datasets.create(_write(tmp_path / "s.npz", **arrays, split=split))
    assert sorted(d2.test.index.tolist()) == list(range(48, 60))
    assert sorted(d2.val.index.tolist()) == list(range(40, 48))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda a: a.update(text=a["text"][:-1]),
            r"array 'text' has shape \(59, 7\), expected \[N=60",
        ),
        (
            lambda a: a["text"].__setitem__((3, 2), np.nan),
            r"array 'text' has NaN or inf values in 1 rows",
        ),
        (lambda a: a["audio"].__setitem__((0, 0, 0, 0), np.inf), r"array 'audio' has NaN or inf"),
        (lambda a: a.update(label=a["label"] - 1), r"array 'label' has negative values"),
        (
            lambda a: a.update(label=np.where(a["label"] == 1, 5, a["label"])),
            r"class\(es\) \[1, 3, 4\] never occur",
        ),
        (
            lambda a: a.update(split=np.array(["train"] * 50 + ["dev"] * 10)),
            r"array 'split' has unknown value\(s\) \['dev'\]",
        ),
        (lambda a: a.pop("text"), r"need at least two modality arrays"),
        (lambda a: a.update(text=np.zeros((60, 0), np.float32)), r"array 'text' is empty"),
        (lambda a: a.pop("label"), r"array 'label' is missing"),
        (
            lambda a: a.update(split=np.where(a["label"] == 2, "test", "train")),
            r"array 'label' has class\(es\) \[2\] with no training sample",
        ),
        (
            lambda a: a.update(text=a["text"] * 1j),
            r"array 'text' is complex \(complex\d+\); store real features",
        ),
        (
            lambda a: a["label"].__setitem__(0, 10**9),
            r"array 'label' has the value 1000000000, but with 60 samples",
        ),
        (
            lambda a: a.update(text=a["text"].astype(np.float64) * 1e300),
            r"array 'text' has values up to .*beyond float32",
        ),
        (lambda a: a.update({"te.xt": a.pop("text")}), r"array 'te.xt'.*rename the array"),
    ],
    ids=[
        "differing-N",
        "nan",
        "inf",
        "negative-label",
        "label-gap",
        "bad-split",
        "one-modality",
        "empty-array",
        "no-label",
        "class-without-train",
        "complex",
        "huge-label",
        "beyond-float32",
        "dot-in-name",
    ],
)
def test_npz_validation_errors_name_the_array(tmp_path: Path, change, message: str) -> None:
    arrays = _good()
    change(arrays)
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(NpzFormatError, match=message) as info:
        datasets.create(path)
    assert "bad.npz" in str(info.value)


def test_npz_missing_or_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothere\.npz"):
        datasets.create(str(tmp_path / "nothere.npz"))
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK not a zip at all")
    with pytest.raises(NpzFormatError, match=r"corrupt\.npz: not a readable"):
        datasets.create(str(bad))
    text = tmp_path / "table.npz"
    text.write_text("1,2,3\n")
    with pytest.raises(NpzFormatError, match=r"table\.npz is not a zip archive \(a text file\?\)"):
        datasets.create(str(text))
    single = tmp_path / "one.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(NpzFormatError, match=r"one\.npz is a single \.npy array"):
        datasets.create(str(single))
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises(NpzFormatError, match=r"folder\.npz is a directory"):
        datasets.create(str(folder))


def test_npz_upper_case_suffix_and_one_feature_modalities(tmp_path: Path) -> None:
    arrays = _good()
    arrays["scalar"] = np.arange(60, dtype=np.float32)  # [N]: one feature per sample
    path = _write(tmp_path / "MINE.NPZ", **arrays)
    data = datasets.create(path)
    assert data.spec["scalar"].shape == (1,)


# ---- synthetic -------------------------------------------------------------------------------


def _centroid_accuracy(data, m: str) -> float:
    x, y = data.train.inputs[m].flatten(1), data.train.labels
    centroids = torch.stack([x[y == c].mean(0) for c in range(data.spec.num_classes)])
    xt, yt = data.test.inputs[m].flatten(1), data.test.labels
    return float((torch.cdist(xt, centroids).argmin(1) == yt).float().mean())


def test_synthetic_informativeness_sets_the_dominant_modality() -> None:
    d = load_synthetic(2, num_samples=1200, informativeness=[3.0, 0.3], seed=0)
    strong, weak = _centroid_accuracy(d, "m0"), _centroid_accuracy(d, "m1")
    assert strong > 0.9 and weak < 0.6 and strong - weak > 0.3


def test_synthetic_large_shapes_are_lazy_and_deterministic() -> None:
    shapes = {"audio": [1, 1024, 128], "video": [3, 3, 224, 224]}
    d = load_synthetic(shapes=shapes, num_classes=6, num_samples=200, seed=0)
    assert d.info.get("lazy") is True
    b1, b2 = d.train.__getitems__([0, 5]), d.train.__getitems__([0, 5])
    assert b1.inputs["video"].shape == (2, 3, 3, 224, 224)
    assert torch.equal(b1.inputs["audio"], b2.inputs["audio"])


# ---- loading without copies ------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.data())
def test_permute_rows_in_place_equals_fancy_indexing(n: int, data) -> None:
    from unipair.data.assemble import permute_rows_

    order = np.array(data.draw(st.permutations(list(range(n)))))
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    want = x[order].copy()
    permute_rows_(x, order)
    np.testing.assert_array_equal(x, want)


def test_npz_splits_share_one_array_per_modality(tmp_path: Path) -> None:
    """The splits are slices of one float32 array per modality (no copy of the data), with the
    rows of each split in their original order and statistics from train only."""
    arrays = _good()
    path = _write(tmp_path / "x.npz", **arrays)
    data = datasets.create(path, seed=3)
    for m in ("text", "audio"):
        storages = {data.split(s).inputs[m].untyped_storage().data_ptr() for s in SPLITS}
        assert len(storages) == 1, f"{m}: the splits do not share one array"
        assert data.train.inputs[m].dtype == torch.float32
    raw = {m: torch.as_tensor(a, dtype=torch.float64) for m, a in arrays.items() if m != "label"}
    train_rows = data.train.index
    for s in SPLITS:
        ds = data.split(s)
        assert torch.equal(ds.index, ds.index.sort().values)  # original order within a split
        assert torch.equal(ds.labels, torch.as_tensor(arrays["label"])[ds.index])
        x = raw["text"]
        mu, sd = x[train_rows].mean(0), x[train_rows].std(0, unbiased=False)
        want = ((x[ds.index] - mu) / sd).float()
        torch.testing.assert_close(ds.inputs["text"], want, rtol=1e-5, atol=1e-5)


def test_padded_sequences_keep_their_masks_and_statistics_skip_padding() -> None:
    from unipair.data.assemble import assemble

    rng = np.random.default_rng(0)
    n, steps = 90, 7
    lengths = rng.integers(1, steps + 1, n)
    valid = np.arange(steps)[None] < lengths[:, None]
    seq = rng.normal(3.0, 2.0, (n, steps, 4)).astype(np.float32)
    seq[~valid] = 1000.0  # padding with a huge value: must not leak into the statistics
    data = assemble("seq", {"seq": seq.copy(), "vec": rng.normal(size=(n, 3))},
                    np.arange(n) % 3, valid={"seq": valid})  # fmt: skip
    assert data.spec["seq"].variable_length and not data.spec["vec"].variable_length
    train = data.train
    x, v = train.inputs["seq"], train.valid["seq"]
    assert torch.equal(v, torch.as_tensor(valid[train.index.numpy()]))
    assert float(x[~v].abs().max()) == 0.0  # padding zero after standardising
    real = x[v]
    torch.testing.assert_close(real.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(real.std(0, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    batch = data.val.__getitems__([0, 1, 2])
    assert torch.equal(batch.valid["seq"], data.val.valid["seq"][:3])


def test_standardizer_statistics_in_chunks_leave_the_training_data_alone() -> None:
    """Fit accumulates float64 statistics over small chunks (in place on a copy): the result
    equals numpy's over the whole array, and the data it was fit on is not touched, even when
    it is already float64."""
    from unipair.data.dataset import TensorMultimodalDataset
    from unipair.data.standardize import Standardizer

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(3.0, 2.0, (5000, 64)))  # float64: 2.5 MB, several chunks
    before = x.clone()
    ds = TensorMultimodalDataset({"a": x, "b": x[:, :8].float()}, torch.zeros(5000).long())
    scaler = Standardizer.fit(ds)
    assert torch.equal(x, before)
    np.testing.assert_allclose(scaler.mean["a"].numpy(), x.numpy().mean(0), rtol=1e-6)
    np.testing.assert_allclose(scaler.std["a"].numpy(), x.numpy().std(0), rtol=1e-6)
