"""UPMC Food-101 and MVSA-Single, image + text, read from the user's copy (nothing downloaded).

Both ship in the MMBT layout (as QMF and MLA use them): ``train.jsonl``, ``dev.jsonl`` and
``test.jsonl`` beside the images, one ``{"id", "label", "text", "img"}`` object per line, ``img``
relative to the folder of the jsonl files. ``dev`` is the validation split. Food-101 is also
read in BalanceBenchmark's CSV layout (``layout="csv"``): ``texts/{train,test}_titles.csv``
with a header naming at least ``text``, ``label`` and ``Image_path``, and the images at
``images/{train,test}/<label>/<Image_path>``; validation is then carved from train (stratified
by class, seeded), since that layout has none.

Each loader builds a manifest table in memory (absolute image paths, the text itself, a split
column) and hands it to :func:`unipair.data.manifest.manifest_data`: images go through the
``image`` reader, texts through a local tokenizer (the ``text`` reader; MLA's recipe is 256
tokens without special tokens), decoded per batch or from a ``unipair prepare`` cache. An empty
text marks the text missing for that sample, as in a manifest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from unipair.data.dataset import MultimodalData, fingerprint
from unipair.data.manifest import ManifestTable, OnError, manifest_data, read_manifest
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = [
    "CSV_COLUMNS",
    "FOOD101_CLASSES",
    "MVSA_CLASSES",
    "load_food101",
    "load_mvsa_single",
]

#: the 101 dishes, sorted by name: the class index order of MLA and BalanceBenchmark
FOOD101_CLASSES: tuple[str, ...] = (
    "apple_pie",
    "baby_back_ribs",
    "baklava",
    "beef_carpaccio",
    "beef_tartare",
    "beet_salad",
    "beignets",
    "bibimbap",
    "bread_pudding",
    "breakfast_burrito",
    "bruschetta",
    "caesar_salad",
    "cannoli",
    "caprese_salad",
    "carrot_cake",
    "ceviche",
    "cheese_plate",
    "cheesecake",
    "chicken_curry",
    "chicken_quesadilla",
    "chicken_wings",
    "chocolate_cake",
    "chocolate_mousse",
    "churros",
    "clam_chowder",
    "club_sandwich",
    "crab_cakes",
    "creme_brulee",
    "croque_madame",
    "cup_cakes",
    "deviled_eggs",
    "donuts",
    "dumplings",
    "edamame",
    "eggs_benedict",
    "escargots",
    "falafel",
    "filet_mignon",
    "fish_and_chips",
    "foie_gras",
    "french_fries",
    "french_onion_soup",
    "french_toast",
    "fried_calamari",
    "fried_rice",
    "frozen_yogurt",
    "garlic_bread",
    "gnocchi",
    "greek_salad",
    "grilled_cheese_sandwich",
    "grilled_salmon",
    "guacamole",
    "gyoza",
    "hamburger",
    "hot_and_sour_soup",
    "hot_dog",
    "huevos_rancheros",
    "hummus",
    "ice_cream",
    "lasagna",
    "lobster_bisque",
    "lobster_roll_sandwich",
    "macaroni_and_cheese",
    "macarons",
    "miso_soup",
    "mussels",
    "nachos",
    "omelette",
    "onion_rings",
    "oysters",
    "pad_thai",
    "paella",
    "pancakes",
    "panna_cotta",
    "peking_duck",
    "pho",
    "pizza",
    "pork_chop",
    "poutine",
    "prime_rib",
    "pulled_pork_sandwich",
    "ramen",
    "ravioli",
    "red_velvet_cake",
    "risotto",
    "samosa",
    "sashimi",
    "scallops",
    "seaweed_salad",
    "shrimp_and_grits",
    "spaghetti_bolognese",
    "spaghetti_carbonara",
    "spring_rolls",
    "steak",
    "strawberry_shortcake",
    "sushi",
    "tacos",
    "takoyaki",
    "tiramisu",
    "tuna_tartare",
    "waffles",
)
#: MVSA-Single's sentiments in MLA's (sorted) index order
MVSA_CLASSES: tuple[str, ...] = ("negative", "neutral", "positive")
#: (split, file) of the MMBT layout; dev.jsonl is the validation split
JSONL_FILES = (("train", "train.jsonl"), ("val", "dev.jsonl"), ("test", "test.jsonl"))
JSONL_KEYS = ("id", "label", "text", "img")
#: BalanceBenchmark's Food-101 CSV layout: (split, file), and the columns read
CSV_FILES = (("train", "texts/train_titles.csv"), ("test", "texts/test_titles.csv"))
CSV_COLUMNS = ("text", "label", "Image_path")
_TOKENIZER_HELP = (
    "give tokenizer= a local tokenizer.json or a Hugging Face tokenizer folder (MLA uses "
    "bert-base-uncased: save it once with AutoTokenizer.from_pretrained('bert-base-uncased')"
    ".save_pretrained('bert-tokenizer') and pass tokenizer=bert-tokenizer, or --set "
    "dataset.options.tokenizer=bert-tokenizer); nothing is downloaded"
)


class _Rows:
    """The manifest table's columns as the split files are read."""

    def __init__(self) -> None:
        self.columns: dict[str, list[str | None]] = {
            k: [] for k in ("id", "text", "image", "label", "split")
        }
        self.lines: list[int] = []

    def add(self, line: int, **cells: str | None) -> None:
        for k, v in cells.items():
            self.columns[k].append(v)
        self.lines.append(line)


def _root(root: str | Path | None, title: str, layout: str) -> Path:
    """The dataset folder; a missing one is a DataNotFoundError (the conformance kit skips)."""
    if root is None:
        raise DataNotFoundError(
            f"{title} is not shipped with unipair: give root= the folder of your copy ({layout})"
        )
    path = Path(root).absolute()
    if not path.is_dir():
        raise DataNotFoundError(f"{title} root {path} is not a folder; expected {layout}")
    return path


def _check_labels(table: ManifestTable, classes: Sequence[str], title: str) -> None:
    """Every label is one of the classes; otherwise one error naming the file and lines."""
    known = set(classes)
    labels = zip(table.lines, table.columns["label"], strict=True)
    bad = [(ln, v) for ln, v in labels if str(v).strip() not in known]
    if bad:
        values = sorted({str(v) for _, v in bad})
        raise DataFormatError(
            f"{table.path}: label value(s) {values[:5]} on line(s) {[ln for ln, _ in bad[:5]]} "
            f"are not {title} classes; the {len(classes)} classes are "
            f"{list(classes)[:8]}{' ...' if len(classes) > 8 else ''}"
        )


def _read_split_file(path: Path, keys: Sequence[str], layout: str) -> ManifestTable:
    """One split file (jsonl or CSV with a header), with every key present in every row."""
    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist; expected {layout}")
    table = read_manifest(path)
    for key in keys:
        values = table.columns.get(key)
        if values is None:
            raise DataFormatError(f"{path}: no {key!r} field; every row needs {list(keys)}")
        empty = [table.lines[i] for i, v in enumerate(values) if v is None and key != "text"]
        if empty:
            raise DataFormatError(f"{path}: empty {key!r} on line(s) {empty[:10]}")
    return table


def _read_jsonl(root: Path, classes: Sequence[str], title: str) -> tuple[_Rows, list[Path]]:
    layout = f"the MMBT layout: {', '.join(f for _, f in JSONL_FILES)} with {list(JSONL_KEYS)}"
    rows, files = _Rows(), []
    for split, name in JSONL_FILES:
        table = _read_split_file(root / name, JSONL_KEYS, layout)
        _check_labels(table, classes, title)
        c = table.columns
        for i, line in enumerate(table.lines):
            rows.add(
                line,
                id=f"{Path(name).stem}/{c['id'][i]}",
                text=c["text"][i],
                image=str(root / str(c["img"][i])),
                label=str(c["label"][i]).strip(),
                split=split,
            )
        files.append(root / name)
    return rows, files


def _read_csv(root: Path, classes: Sequence[str], title: str) -> tuple[_Rows, list[Path]]:
    layout = (
        f"BalanceBenchmark's layout: {' and '.join(f for _, f in CSV_FILES)} with a header "
        f"naming {list(CSV_COLUMNS)}, images at images/<split>/<label>/<Image_path>"
    )
    rows, files = _Rows(), []
    for split, name in CSV_FILES:
        table = _read_split_file(root / name, CSV_COLUMNS, layout)
        _check_labels(table, classes, title)
        c = table.columns
        for i, line in enumerate(table.lines):
            label, image = str(c["label"][i]).strip(), str(c["Image_path"][i])
            rows.add(
                line,
                id=f"{split}/{label}/{image}",
                text=c["text"][i],
                image=str(root / "images" / split / label / image),
                label=label,
                split=split,
            )
        files.append(root / name)
    return rows, files


def _load(
    name: str,
    title: str,
    classes: Sequence[str],
    root: str | Path | None,
    tokenizer: str | Path | None,
    layout: str,
    *,
    max_length: int,
    special_tokens: bool,
    size: int,
    transforms: Mapping[str, Mapping[str, Any]] | None,
    val_fraction: float,
    seed: int,
    on_error: OnError,
    augment: bool,
    prepared: str | None,
) -> MultimodalData:
    """The shared part of the two loaders: read the layout, build the table, the dataset."""
    readers = {"jsonl": _read_jsonl, "csv": _read_csv}
    if layout not in readers:
        raise ConfigError(f"{name}: layout must be 'jsonl' or 'csv', got {layout!r}")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"{name}: on_error must be 'raise' or 'skip', got {on_error!r}")
    unknown = sorted(set(transforms or {}) - {"train", "eval"})
    if unknown:
        raise ConfigError(f"{name}: transforms takes 'train' and 'eval' options, not {unknown}")
    where = "train.jsonl, dev.jsonl, test.jsonl" if layout == "jsonl" else "texts/, images/"
    folder = _root(root, title, f"{where} in the {layout} layout")
    if tokenizer is None:
        raise ConfigError(f"{name}: no tokenizer; {_TOKENIZER_HELP}")
    rows, files = readers[layout](folder, classes, title)
    table = ManifestTable(folder, rows.columns, rows.lines)
    modalities = {
        "text": {
            "kind": "text",
            "tokenizer": str(tokenizer),
            "max_length": max_length,
            "special_tokens": special_tokens,
        },
        "image": {"kind": "image", "size": size, **dict(transforms or {})},
    }
    split_rule = (
        "train.jsonl / dev.jsonl (validation) / test.jsonl, as given"
        if layout == "jsonl"
        else f"texts/test_titles.csv as given; validation {val_fraction} of "
        f"texts/train_titles.csv, stratified by class (seed {seed})"
    )
    info = {
        "benchmark": title,
        "layout": layout,
        "files": [str(f) for f in files],
        "split_rule": split_rule,
        "target": f"{len(classes)} classes, in the order of info['classes']",
        "preprocessing": {
            "text": f"tokenizer {tokenizer}, at most {max_length} tokens, special tokens "
            f"{'added' if special_tokens else 'not added (MLA)'}; empty text: missing",
            "image": f"RGB at {size} px, ImageNet mean/std; train: random resized crop + "
            f"flip, eval: resize, unless the transforms {dict(transforms or {})} say otherwise",
        },
    }
    data = manifest_data(
        table,
        modalities,
        name=name,
        seed=seed,
        val_fraction=val_fraction,
        on_error=on_error,
        augment=augment,
        prepared=prepared,
        classes=list(classes),
        info=info,
    )
    # the table's path is a folder: fold the split files' bytes into the fingerprint
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    data.fingerprint = fingerprint(data.fingerprint, digest.hexdigest())
    return data


def load_food101(
    root: str | Path | None = None,
    tokenizer: str | Path | None = None,
    max_length: int = 256,
    special_tokens: bool = False,
    size: int = 224,
    layout: str = "jsonl",
    transforms: Mapping[str, Mapping[str, Any]] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    on_error: OnError = "raise",
    augment: bool = True,
    prepared: str | None = None,
) -> MultimodalData:
    """UPMC Food-101 (image + recipe-page title, 101 dishes in :data:`FOOD101_CLASSES` order).

    ``layout="jsonl"``: the MMBT files, dev as validation; ``layout="csv"``: BalanceBenchmark's
    ``texts/*_titles.csv``, validation ``val_fraction`` of train (stratified, ``seed``). Text:
    ``tokenizer`` (a local tokenizer.json or tokenizer folder), ``max_length`` tokens,
    ``special_tokens`` (MLA: false). Images: ``size`` px, ``transforms`` the image reader's
    ``train``/``eval`` options. ``on_error``, ``augment``, ``prepared``: as for a manifest.
    """
    return _load(
        "food101",
        "UPMC Food-101",
        FOOD101_CLASSES,
        root,
        tokenizer,
        layout,
        max_length=max_length,
        special_tokens=special_tokens,
        size=size,
        transforms=transforms,
        val_fraction=val_fraction,
        seed=seed,
        on_error=on_error,
        augment=augment,
        prepared=prepared,
    )


def load_mvsa_single(
    root: str | Path | None = None,
    tokenizer: str | Path | None = None,
    max_length: int = 256,
    special_tokens: bool = False,
    size: int = 224,
    transforms: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    on_error: OnError = "raise",
    augment: bool = True,
    prepared: str | None = None,
) -> MultimodalData:
    """MVSA-Single (image + tweet, sentiment in :data:`MVSA_CLASSES` order: negative, neutral,
    positive), from the MMBT jsonl files with dev as validation; options as
    :func:`load_food101`."""
    return _load(
        "mvsa_single",
        "MVSA-Single",
        MVSA_CLASSES,
        root,
        tokenizer,
        "jsonl",
        max_length=max_length,
        special_tokens=special_tokens,
        size=size,
        transforms=transforms,
        val_fraction=0.1,
        seed=seed,
        on_error=on_error,
        augment=augment,
        prepared=prepared,
    )
