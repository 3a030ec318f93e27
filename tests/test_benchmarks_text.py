"""The text benchmarks' loaders on miniature copies in their exact layouts, with real files.

UPMC Food-101 and MVSA-Single: MMBT jsonl files (and BalanceBenchmark's CSV layout for
Food-101) beside real JPEGs (MNIST digits saved by Pillow), tokenised by a WordPiece tokenizer
trained here. CMU-MOSI/MOSEI: pickles with MMSA's keys, dtypes and shapes (small N and T).
Each loader trains one epoch of ``joint``, and every malformed input gives one clear error.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import unipair
from unipair.data.benchmarks.mmbt import FOOD101_CLASSES, load_food101, load_mvsa_single
from unipair.data.benchmarks.mmsa import load_mosei, load_mosi
from unipair.data.idx import read_idx
from unipair.data.registry import DATASETS, DatasetEntry, create
from unipair.engine.config import load_config
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

#: the registration lines proposed for data/registry.py, registered here for the test's length
ENTRIES = {
    "food101": ("unipair.data.benchmarks.mmbt:load_food101", "UPMC Food-101 (image + text)"),
    "mvsa_single": ("unipair.data.benchmarks.mmbt:load_mvsa_single", "MVSA-Single"),
    "mosi": ("unipair.data.benchmarks.mmsa:load_mosi", "CMU-MOSI (MMSA pickles)"),
    "mosei": ("unipair.data.benchmarks.mmsa:load_mosei", "CMU-MOSEI (MMSA pickles)"),
}
MVSA = ("negative", "neutral", "positive")
WORDS = {
    "negative": "sad broken rain angry lost",
    "neutral": "table train street paper grey",
    "positive": "happy sunny love great smile",
}
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
RUN = {"fabric": {"accelerator": "cpu"}, "logging": {"progress": "none"}}


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, (loader, description) in ENTRIES.items():
        if name not in DATASETS:
            monkeypatch.setitem(DATASETS._entries, name, DatasetEntry(loader, description))


# ---- miniature MMBT copies -------------------------------------------------------------------


def _text(label: str, rng: random.Random) -> str:
    words = WORDS.get(label, label.replace("_", " ")).split()
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "!"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizers = pytest.importorskip("tokenizers", reason="the `text` extra is not installed")
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    rng = random.Random(0)
    corpus = [_text(label, rng) for label in [*MVSA, *FOOD101_CLASSES] * 4]
    tok.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS)
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def digits(mnist_root: Path) -> np.ndarray:
    pytest.importorskip("PIL", reason="Pillow (the `media` extra) is not installed")
    return read_idx(mnist_root / "t10k-images-idx3-ubyte.gz", ndim=3)[:400]


def _jpeg(path: Path, digit: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(digit).save(path, quality=90)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _mmbt(root: Path, digits: np.ndarray, labels: dict[str, list[str]], folder: str) -> Path:
    """MMBT files: ``img`` relative to the jsonl folder, one JPEG per row."""
    rng, k = random.Random(1), 0
    for split, names in labels.items():
        rows = []
        for label in names:
            img = f"{folder}/{split}/{label}/{k}.jpg"
            _jpeg(root / img, digits[k % len(digits)])
            rows.append({"id": str(k), "label": label, "text": _text(label, rng), "img": img})
            k += 1
        _write_jsonl(root / f"{split}.jsonl", rows)
    return root


@pytest.fixture(scope="module")
def mvsa_root(tmp_path_factory: pytest.TempPathFactory, digits: np.ndarray) -> Path:
    labels = {"train": list(MVSA) * 4, "dev": list(MVSA) * 2, "test": list(MVSA) * 2}
    return _mmbt(tmp_path_factory.mktemp("MVSA_Single"), digits, labels, "data")


@pytest.fixture(scope="module")
def food_root(tmp_path_factory: pytest.TempPathFactory, digits: np.ndarray) -> Path:
    few = list(FOOD101_CLASSES[:5])
    labels = {"train": list(FOOD101_CLASSES), "dev": few, "test": few}
    return _mmbt(tmp_path_factory.mktemp("food101"), digits, labels, "images")


@pytest.fixture(scope="module")
def food_csv_root(tmp_path_factory: pytest.TempPathFactory, digits: np.ndarray) -> Path:
    """BalanceBenchmark's layout: texts/{train,test}_titles.csv, images/<split>/<label>/."""
    import csv

    root, rng, k = tmp_path_factory.mktemp("food101_csv"), random.Random(2), 0
    (root / "texts").mkdir()
    for split, labels in (("train", list(FOOD101_CLASSES) * 2), ("test", FOOD101_CLASSES[:5])):
        with open(root / "texts" / f"{split}_titles.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["Image_path", "text", "label"])
            for label in labels:
                _jpeg(root / "images" / split / label / f"{label}_{k}.jpg", digits[k % 400])
                writer.writerow([f"{label}_{k}.jpg", _text(label, rng), label])
                k += 1
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- Food-101 and MVSA-Single ----------------------------------------------------------------


def test_mvsa_reads_the_mmbt_layout(mvsa_root: Path, tokenizer: Path) -> None:
    from tokenizers import Tokenizer

    data = load_mvsa_single(mvsa_root, tokenizer, size=32, augment=False)
    assert {s: len(data.split(s)) for s in ("train", "val", "test")} == {
        "train": 12, "val": 6, "test": 6,
    }  # fmt: skip
    assert data.info["classes"] == list(MVSA) and data.spec.num_classes == 3
    for split, file in (("train", "train"), ("val", "dev"), ("test", "test")):
        expected = [MVSA.index(r["label"]) for r in _lines(mvsa_root / f"{file}.jsonl")]
        assert data.split(split).labels.tolist() == expected, split
    text, image = data.spec["text"], data.spec["image"]
    tok = Tokenizer.from_file(str(tokenizer))
    assert text.variable_length and text.shape == (256,) and text.vocab == tok.get_vocab_size()
    assert image.shape == (3, 32, 32) and not image.variable_length

    batch = data.val.__getitems__(list(range(6)))
    assert batch.inputs["image"].shape == (6, 3, 32, 32)
    assert torch.isfinite(batch.inputs["image"]).all() and batch.inputs["image"].std() > 0.1
    specials = {tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")}
    for j, row in enumerate(_lines(mvsa_root / "dev.jsonl")):
        ids = batch.inputs["text"][j][batch.valid["text"][j]].tolist()
        # MLA's recipe: the tokenizer's ids without [CLS]/[SEP], unpadded, masked in the batch
        assert ids == tok.encode(row["text"], add_special_tokens=False).ids
        assert not specials & set(ids)
        assert int(batch.valid["text"][j].sum()) == len(ids)
    assert all(Path(p).is_absolute() for p in data.train.table.columns["image"])
    assert "dev.jsonl" in data.info["split_rule"] and data.info["benchmark"] == "MVSA-Single"

    marked = load_mvsa_single(mvsa_root, tokenizer, size=32, special_tokens=True)
    first = marked.val.__getitems__([0])
    assert first.inputs["text"][0, 0] == tok.token_to_id("[CLS]")


def test_food101_jsonl_has_the_101_dishes_in_sorted_order(food_root: Path, tokenizer) -> None:
    assert len(FOOD101_CLASSES) == 101 and list(FOOD101_CLASSES) == sorted(FOOD101_CLASSES)
    data = load_food101(food_root, tokenizer, size=28)
    assert data.spec.num_classes == 101 and data.info["classes"] == list(FOOD101_CLASSES)
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [101, 5, 5]
    assert data.train.labels.tolist() == list(range(101))  # train.jsonl lists them in order
    assert data.info["layout"] == "jsonl"
    batch = data.test.__getitems__([0, 4])
    assert batch.inputs["image"].shape == (2, 3, 28, 28) and batch.labels.tolist() == [0, 4]


def test_food101_csv_layout_carves_validation_from_train(food_csv_root: Path, tokenizer) -> None:
    def load(seed: int):
        return load_food101(
            food_csv_root, tokenizer, size=28, layout="csv", val_fraction=0.5, seed=seed
        )

    data, again, other = load(0), load(0), load(1)
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [101, 101, 5]
    # stratified: every dish once in train and once in validation
    assert (
        sorted(data.train.labels.tolist()) == sorted(data.val.labels.tolist()) == list(range(101))
    )
    assert torch.equal(data.val.rows, again.val.rows) and data.fingerprint == again.fingerprint
    assert not torch.equal(data.val.rows, other.val.rows)
    assert "stratified" in data.info["split_rule"] and data.info["layout"] == "csv"
    image = data.train.table.columns["image"][0]
    assert image.endswith("images/train/apple_pie/apple_pie_0.jpg") and Path(image).is_absolute()
    assert data.test.__getitems__([0]).inputs["image"].shape == (1, 3, 28, 28)


def test_mvsa_trains_one_epoch_of_joint(
    mvsa_root: Path, tokenizer: Path, tmp_path: Path, registered
) -> None:
    options = {"root": str(mvsa_root), "tokenizer": str(tokenizer), "size": 32}
    result = unipair.train(
        {
            "dataset": {"name": "mvsa_single", "options": options},
            "method": "joint",
            "model": {
                "width": 16,
                "encoders": {
                    "text": {"name": "tokens", "options": {"layers": 1, "heads": 2}},
                    "image": {"name": "cnn", "options": {"channels": [8, 16]}},
                },
            },
            "train": {"epochs": 1, "batch_size": 6},
            "out": str(tmp_path),
            **RUN,
        }
    )
    assert 0.0 <= result.test["acc"] <= 1.0 and np.isfinite(result.history[0]["train/loss"])


def test_mvsa_prepared_cache_gives_the_same_samples(
    mvsa_root: Path, tokenizer: Path, tmp_path: Path, registered
) -> None:
    from unipair.data.prepared import prepare

    options = {"root": str(mvsa_root), "tokenizer": str(tokenizer), "size": 32, "augment": False}
    folder = prepare("mvsa_single", tmp_path / "prepared", options)
    files, cached = create("mvsa_single", **options), create(str(folder))
    assert cached.info["prepared"] == str(folder) and cached.fingerprint == files.fingerprint
    a, b = (d.test.__getitems__(list(range(6))) for d in (files, cached))
    assert all(torch.equal(a.inputs[m], b.inputs[m]) for m in ("text", "image"))


def test_mvsa_on_error_skip_leaves_out_a_row_without_its_image(
    mvsa_root: Path, tokenizer: Path, tmp_path: Path
) -> None:
    root = _mvsa_copy(mvsa_root, tmp_path / "copy")
    (root / "data" / "test" / "neutral" / "19.jpg").unlink()
    data = load_mvsa_single(root, tokenizer, size=32, on_error="skip")
    assert len(data.test) == 5 and data.info["skipped_rows"][0]["line"] == 2
    with pytest.raises(ConfigError, match="on_error must be"):
        load_mvsa_single(root, tokenizer, on_error="ignore")


def _mvsa_copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda r: (r / "dev.jsonl").unlink(), DataNotFoundError, "dev.jsonl does not exist"),
        (lambda r: (r / "test.jsonl").write_text(""), DataFormatError, "test.jsonl has no rows"),
        (
            lambda r: _write_jsonl(
                r / "dev.jsonl", [{**row, "label": "Positive"} for row in _lines(r / "dev.jsonl")]
            ),
            DataFormatError,
            "['Positive'] on line(s) [1, 2, 3, 4, 5]",
        ),
        (
            lambda r: _write_jsonl(
                r / "train.jsonl",
                [{k: v for k, v in row.items() if k != "img"} for row in _lines(r / "train.jsonl")],
            ),
            DataFormatError,
            "train.jsonl: no 'img' field",
        ),
        (lambda r: (r / "data" / "test" / "neutral" / "19.jpg").unlink(), DataFormatError,
         "19.jpg does not exist"),
        (lambda r: (r / "train.jsonl").write_text("{not json\n"), DataFormatError,
         "train.jsonl line 1: not valid JSON"),
    ],
    ids=["missing-dev", "empty-jsonl", "label-spelling", "missing-key", "missing-image", "json"],
)  # fmt: skip
def test_malformed_mmbt_copies_fail_once_and_name_the_path(
    mvsa_root: Path, tokenizer: Path, tmp_path: Path, edit, error, message
) -> None:
    root = _mvsa_copy(mvsa_root, tmp_path / "copy")
    edit(root)
    with pytest.raises(error) as caught:
        load_mvsa_single(root, tokenizer, size=32)
    assert message in str(caught.value) and str(root) in str(caught.value)


def test_mmbt_options_are_checked(mvsa_root: Path, food_root: Path, tokenizer, tmp_path) -> None:
    with pytest.raises(DataNotFoundError, match="give root="):
        load_food101()
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        load_mvsa_single(tmp_path / "nowhere", tokenizer)
    with pytest.raises(ConfigError, match="no tokenizer; give tokenizer="):
        load_mvsa_single(mvsa_root)
    with pytest.raises(DataNotFoundError, match=r"tokenizer .* does not exist"):
        load_mvsa_single(mvsa_root, tmp_path / "tokenizer.json")
    with pytest.raises(ConfigError, match="layout must be"):
        load_food101(food_root, tokenizer, layout="parquet")
    with pytest.raises(DataNotFoundError, match=r"texts/train_titles\.csv does not exist"):
        load_food101(food_root, tokenizer, layout="csv")
    with pytest.raises(ConfigError, match="transforms takes 'train' and 'eval'"):
        load_food101(food_root, tokenizer, transforms={"test": {}})


def test_food101_csv_without_a_column_is_named(food_csv_root: Path, tokenizer, tmp_path) -> None:
    import shutil

    root = tmp_path / "food"
    shutil.copytree(food_csv_root, root)
    path = root / "texts" / "test_titles.csv"
    path.write_text(path.read_text().replace("Image_path", "image", 1))
    with pytest.raises(DataFormatError, match=r"test_titles\.csv: no 'Image_path' field"):
        load_food101(root, tokenizer, layout="csv", val_fraction=0.5)


# ---- CMU-MOSI / MOSEI in MMSA pickles --------------------------------------------------------

#: MMSA's regression labels cover every class of every target (halves round to even)
SENTIMENT = [-3.0, -2.4, -1.5, -0.6, 0.0, 0.5, 1.0, 1.5, 2.5, 3.0, -1.2, 0.0]
SIZES = {"train": 24, "valid": 12, "test": 12}
STEPS = {"text": 8, "audio": 12, "vision": 10}
DIMS = {"text": 768, "audio": 5, "vision": 20}


def _mmsa(aligned: bool, lengths: str = "random", seed: int = 0) -> dict:
    """A pickle's content with MMSA's keys, dtypes and shapes; ``lengths``: random, full or
    absent (aligned data)."""
    rng = np.random.default_rng(seed)
    steps = {m: 8 if aligned else t for m, t in STEPS.items()}
    out = {}
    for s, n in SIZES.items():
        part: dict = {"id": np.array([f"video{i}$_${i}" for i in range(n)])}
        part["raw_text"] = np.array([f"words of clip {i}" for i in range(n)])
        y = np.resize(np.roll(SENTIMENT, len(out)), n).astype(np.float32)
        part["regression_labels"] = y
        tokens = rng.integers(1, steps["text"] + 1, n)
        bert = np.zeros((n, 3, steps["text"]), dtype=np.float64)
        for i, k in enumerate(tokens):
            bert[i, 0, :k] = rng.integers(100, 2000, k)
            bert[i, 1, :k] = 1
        part["text_bert"] = bert
        text = rng.normal(size=(n, steps["text"], DIMS["text"])).astype(np.float32)
        text[~bert[:, 1].astype(bool)] = 0
        part["text"] = text
        for m in ("audio", "vision"):
            t = steps[m]
            length = rng.integers(1, t + 1, n) if lengths == "random" else np.full(n, t)
            x = rng.normal(size=(n, t, DIMS[m])).astype(np.float32)
            x[np.arange(t)[None, :] >= length[:, None]] = 0
            part[m] = x
            if lengths != "absent":
                part[f"{m}_lengths"] = length.tolist() if m == "audio" else length
        part["audio"][0, 0, :2] = -np.inf  # as some COVAREP frames are
        out[s] = part
    return out


def _write_pickle(folder: Path, variant: str, content: dict) -> Path:
    path = folder / "Processed" / f"{variant}_50.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content))
    return folder


@pytest.fixture(scope="module")
def mosi_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("MOSI")
    _write_pickle(root, "aligned", _mmsa(aligned=True, lengths="absent"))
    return _write_pickle(root, "unaligned", _mmsa(aligned=False))


@pytest.mark.parametrize("target", ["has0", "non0", "3class", "7class"])
def test_mmsa_targets(mosi_root: Path, target: str) -> None:
    data = load_mosi(mosi_root, target=target)
    content = _mmsa(aligned=True, lengths="absent")
    for s, u in (("train", "train"), ("valid", "val"), ("test", "test")):
        y = content[s]["regression_labels"].astype(np.float64)
        expected = {
            "has0": (y >= 0).astype(int),
            "non0": (y[y != 0] > 0).astype(int),
            "3class": np.sign(y).astype(int) + 1,
            "7class": np.round(np.clip(y, -3, 3)).astype(int) + 3,
        }[target]
        assert data.split(u).labels.tolist() == expected.tolist(), (target, u)
    classes = {"has0": 2, "non0": 2, "3class": 3, "7class": 7}[target]
    assert data.spec.num_classes == classes == len(data.info["classes"])
    assert data.info["target"] == target and "as given" in data.info["split_rule"]
    if target == "non0":  # zeros are dropped from every split, test included
        pairs = (("train", "train"), ("valid", "val"), ("test", "test"))
        zeros = {u: int(np.sum(content[s]["regression_labels"] == 0)) for s, u in pairs}
        assert all(zeros.values()) and data.info["dropped_label_0"] == zeros
        assert len(data.test) == SIZES["test"] - zeros["test"]
    if target == "7class":  # 0.5 -> 0 and -1.5 -> -2, as np.round (MMSA) rounds
        assert data.train.labels[5] == 3 and data.train.labels[2] == 1


def test_mmsa_unaligned_masks_lengths_and_neg_inf(mosi_root: Path) -> None:
    data = load_mosi(mosi_root, variant="unaligned")
    content = _mmsa(aligned=False)
    spec = {m.name: m for m in data.spec.modalities}
    assert {m: (s.shape, s.variable_length) for m, s in spec.items()} == {
        "text": ((8, 768), True), "audio": ((12, 5), True), "vision": ((10, 20), True),
    }  # fmt: skip
    batch = data.val.__getitems__(list(range(SIZES["valid"])))
    part = content["valid"]
    for m in ("audio", "vision"):
        lengths = np.asarray(part[f"{m}_lengths"])
        assert batch.valid[m].sum(1).tolist() == lengths.tolist(), m
        assert torch.equal(batch.inputs[m], torch.from_numpy(np.nan_to_num(part[m], neginf=0)))
    assert torch.equal(batch.valid["text"], torch.from_numpy(part["text_bert"][:, 1] > 0))
    train = data.train.__getitems__([0])
    assert (
        torch.isfinite(train.inputs["audio"]).all() and (train.inputs["audio"][0, 0, :2] == 0).all()
    )
    assert data.info["preprocessing"]["standardize"] == "none (as MMSA)"


@pytest.mark.parametrize("lengths", ["absent", "full"])
def test_mmsa_aligned_without_informative_lengths_reads_every_step(tmp_path, lengths) -> None:
    root = _write_pickle(tmp_path, "aligned", _mmsa(aligned=True, lengths=lengths))
    data = load_mosei(root)
    spec = {m.name: m for m in data.spec.modalities}
    assert not spec["audio"].variable_length and not spec["vision"].variable_length
    assert spec["text"].variable_length and spec["audio"].shape == (8, 5)
    assert set(data.train.__getitems__([0, 1]).valid) == {"text"}
    assert data.info["preprocessing"]["masks"]["audio"].startswith("none: all 8 steps read")


def test_mmsa_token_ids_carry_the_vocabulary(mosi_root: Path) -> None:
    data = load_mosi(mosi_root, text="tokens")
    content = _mmsa(aligned=True, lengths="absent")
    ids = np.concatenate([content[s]["text_bert"][:, 0] for s in SIZES])
    spec = data.spec["text"]
    assert spec.shape == (8,) and spec.vocab == int(ids.max()) + 1 and spec.kind == "tokens"
    batch = data.test.__getitems__(list(range(SIZES["test"])))
    assert torch.equal(
        batch.inputs["text"], torch.from_numpy(content["test"]["text_bert"][:, 0]).float()
    )
    assert load_mosi(mosi_root, text="tokens", vocab_size=30522).spec["text"].vocab == 30522
    with pytest.raises(ConfigError, match=r"vocab_size=100, but .* holds token id"):
        load_mosi(mosi_root, text="tokens", vocab_size=100)


def test_mmsa_standardize_is_off_by_default_and_fits_on_train(mosi_root: Path) -> None:
    raw = load_mosi(mosi_root, variant="unaligned")
    std = load_mosi(mosi_root, variant="unaligned", standardize=True)
    assert raw.fingerprint != std.fingerprint
    rows = list(range(SIZES["train"]))
    b = std.train.__getitems__(rows)
    real = b.inputs["vision"][b.valid["vision"]]
    torch.testing.assert_close(real.mean(0), torch.zeros(20), atol=1e-4, rtol=0)
    torch.testing.assert_close(real.std(0, correction=0), torch.ones(20), atol=1e-3, rtol=0)
    assert (b.inputs["vision"][~b.valid["vision"]] == 0).all()
    assert "fitted on the training" in std.info["preprocessing"]["standardize"]
    tokens = load_mosi(mosi_root, text="tokens", standardize=True).train.__getitems__(rows)
    assert torch.equal(tokens.inputs["text"], tokens.inputs["text"].round())  # ids untouched


def test_mosi_trains_one_epoch_of_joint(mosi_root: Path, tmp_path: Path, registered) -> None:
    options = {"root": str(mosi_root), "variant": "unaligned", "target": "3class"}
    encoder = {"name": "transformer", "options": {"layers": 1, "heads": 2}}
    result = unipair.train(
        {
            "dataset": {"name": "mosi", "options": options},
            "method": "joint",
            "model": {"width": 16, "encoders": {"*": encoder}},
            "train": {"epochs": 1, "batch_size": 8, "monitor": "loss"},
            "out": str(tmp_path),
            **RUN,
        }
    )
    assert 0.0 <= result.test["acc"] <= 1.0 and np.isfinite(result.history[0]["train/loss"])


def _truncated(root: Path) -> None:
    path = root / "Processed" / "aligned_50.pkl"
    path.write_bytes(path.read_bytes()[:5000])


def _edit(root: Path, change) -> None:
    path = root / "Processed" / "aligned_50.pkl"
    content = pickle.loads(path.read_bytes())
    change(content)
    path.write_bytes(pickle.dumps(content))


@pytest.mark.parametrize(
    ("edit", "variant", "error", "message"),
    [
        (_truncated, "aligned", DataFormatError, "aligned_50.pkl: not a readable MMSA pickle"),
        (lambda r: (r / "Processed" / "aligned_50.pkl").write_bytes(pickle.dumps([1, 2])),
         "aligned", DataFormatError, "not an MMSA pickle: expected a dict"),
        (lambda r: _edit(r, lambda c: c["valid"].pop("vision")), "aligned", DataFormatError,
         "split 'valid' has no 'vision' key"),
        (lambda r: _edit(r, lambda c: c["test"].pop("text_bert")), "aligned", DataFormatError,
         "split 'test' has no 'text_bert' key"),
        (lambda r: _edit(r, lambda c: c["train"]["vision"].__setitem__((1, 1, 1), np.nan)),
         "aligned", DataFormatError, "vision holds 1 NaN or infinite value"),
        (lambda r: _edit(r, lambda c: c["train"].__setitem__("audio", c["train"]["audio"][:3])),
         "aligned", DataFormatError, "train/audio has shape [3, 8, 5]; expected 24 rows"),
        (lambda r: None, "unaligned", DataNotFoundError, "unaligned_50.pkl does not exist"),
    ],
    ids=["truncated", "foreign", "missing-key", "missing-text-bert", "nan", "rows", "missing-file"],
)  # fmt: skip
def test_malformed_mmsa_pickles_fail_once_and_name_the_file(
    tmp_path: Path, edit, variant, error, message
) -> None:
    root = _write_pickle(tmp_path, "aligned", _mmsa(aligned=True, lengths="absent"))
    edit(root)
    with pytest.raises(error) as caught:
        load_mosi(root, variant=variant)
    assert message in str(caught.value) and str(root) in str(caught.value)


def test_mmsa_options_and_unaligned_lengths_are_checked(tmp_path: Path, mosi_root: Path) -> None:
    with pytest.raises(DataNotFoundError, match="give root="):
        load_mosi()
    with pytest.raises(ConfigError, match="target must be one of"):
        load_mosi(mosi_root, target="acc2")
    with pytest.raises(ConfigError, match="variant must be one of"):
        load_mosei(mosi_root, variant="raw")
    content = _mmsa(aligned=False)
    del content["test"]["vision_lengths"]
    root = _write_pickle(tmp_path, "unaligned", content)
    with pytest.raises(DataFormatError, match="split 'test' has no 'vision_lengths' key"):
        load_mosi(root, variant="unaligned")
    # the pickle itself may be given as root
    pkl = mosi_root / "Processed" / "unaligned_50.pkl"
    assert load_mosi(pkl, variant="unaligned").info["file"] == str(pkl)


# ---- presets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "dataset", "encoders"),
    [
        ("mla_food101", "food101", {"text": "tokens", "image": "resnet18"}),
        ("mla_mvsa", "mvsa_single", {"text": "tokens", "image": "resnet18"}),
        ("mosi", "mosi", {"*": "transformer"}),
        ("mosei", "mosei", {"*": "transformer"}),
    ],
)
def test_presets_validate_and_reject_a_missing_root(registered, preset, dataset, encoders) -> None:
    cfg = load_config(f"preset:{preset}")
    assert cfg.dataset.name == dataset
    assert {m: e.name for m, e in cfg.model.encoders.items()} == encoders
    assert "root" not in cfg.dataset.options and "tokenizer" not in cfg.dataset.options
    if dataset.startswith("mo"):
        assert cfg.train.monitor == "loss" and cfg.train.early_stopping_patience == 8
    else:
        assert cfg.method.name == "mla" and cfg.dataset.options["special_tokens"] is False
    with pytest.raises(DataNotFoundError, match="give root="):
        create(cfg.dataset.name, **cfg.dataset.options)
