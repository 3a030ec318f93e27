"""Manifest datasets end to end on real media: FSDD recordings, MNIST digits as PNG images and
PyAV-encoded videos (mp4 and flv), decoded per batch, prepared into a cache, with workers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import unipair
from av_manifest import MODALITIES, MODEL, build
from unipair.cli.main import app
from unipair.data.manifest import load_manifest, read_manifest
from unipair.errors import ConfigError, DataFormatError

pytest.importorskip("av", reason="PyAV (the media extra) is not installed")
pytest.importorskip("PIL", reason="Pillow (the media extra) is not installed")

runner = CliRunner()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, fsdd_root: Path, mnist_root: Path) -> Path:
    return build(tmp_path_factory.mktemp("av"), fsdd_root, mnist_root)


def _options(**extra) -> dict:
    return {"modalities": MODALITIES, "val_fraction": 0.2, "test_fraction": 0.2, **extra}


def test_manifest_reads_every_modality(manifest: Path) -> None:
    data = load_manifest(manifest, **_options())
    assert {m.name: m.shape for m in data.spec.modalities} == {
        "audio": (1, 32, 40), "image": (3, 32, 32), "video": (3, 2, 32, 32),
    }  # fmt: skip
    assert data.spec.num_classes == 10 and sum(len(data.split(s)) for s in
                                               ("train", "val", "test")) == 60  # fmt: skip
    batch = data.val.fetch(torch.arange(len(data.val)))
    for m, x in batch.inputs.items():
        assert torch.isfinite(x).all() and x.std() > 0.1, m
    # the decoded video frames show the digit (bright pixels), at the eval size
    assert batch.inputs["video"].amax() > 1.0
    # evaluation is deterministic; training augments, seeded by (seed, epoch, index)
    again = data.val.fetch(torch.arange(len(data.val)))
    assert torch.equal(batch.inputs["video"], again.inputs["video"])
    from unipair.engine.samplers import IndexBatch

    rows = list(range(4))
    a = data.train.__getitems__(IndexBatch(rows, epoch=0))
    b = data.train.__getitems__(IndexBatch(rows, epoch=0))
    c = data.train.__getitems__(IndexBatch(rows, epoch=1))
    assert torch.equal(a.inputs["image"], b.inputs["image"])
    assert not torch.equal(a.inputs["image"], c.inputs["image"])


def test_loader_batches_carry_frames_as_bytes_until_the_device(manifest: Path) -> None:
    """A loader's batch holds frames as uint8 (4x fewer bytes through workers and the bus);
    dequantized they are exactly what a sample's own transform gives, absent rows zeros."""
    from unipair.data.media.transforms import sample_generator
    from unipair.engine.samplers import IndexBatch

    data = load_manifest(manifest, **_options())
    rows = [0, 1, 2, 3]
    raw = data.train.loader_batch(IndexBatch(rows, epoch=3))
    assert set(raw.quantized) == {"image", "video"}
    assert raw.inputs["video"].dtype == torch.uint8 and raw.inputs["audio"].dtype == torch.float32
    floats = raw.dequantize()
    assert not floats.quantized and floats.inputs["video"].dtype == torch.float32
    assert torch.equal(floats.inputs["image"], data.train.fetch(torch.tensor(rows), epoch=3)
                       .inputs["image"])  # fmt: skip
    ds, row = data.train, int(data.train.rows[2])
    gen = sample_generator(ds.seed, 3, row)  # the readers draw from it in turn
    for m, reader in ds.readers.items():
        cell = str(manifest.parent / ds.table.columns[m][row])
        alone = reader.finish(reader.load(cell, True, gen), True, gen)
        assert torch.equal(floats.inputs[m][2], alone), m
    hidden = raw.with_missing({"video": torch.tensor([False, True, False, False])}).dequantize()
    assert hidden.inputs["video"][1].abs().max() == 0 and not hidden.present["video"][1]
    assert torch.equal(hidden.inputs["video"][0], floats.inputs["video"][0])


def _train(manifest_or_folder: Path, tmp_path: Path, name: str, method: str, **over) -> dict:
    cfg = {
        "dataset": {"name": str(manifest_or_folder), "options": _options(augment=False)},
        "method": method,
        "model": MODEL,
        "optim": {"lr": 3e-3},
        "train": {"epochs": 1, "batch_size": 16, **over},
        "fabric": {"accelerator": "cpu"},
        "logging": {"progress": "none"},
        "out": str(tmp_path),
        "name": name,
    }
    return unipair.train(cfg).history[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["joint", "mla"])
def test_files_prepared_cache_and_workers_agree(manifest: Path, tmp_path: Path, method) -> None:
    """Without augmentation the three ways of reading give the same first epoch."""
    from unipair.data.prepared import prepare

    folder = prepare(manifest, tmp_path / "prepared", _options())
    files = _train(manifest, tmp_path, "files", method)
    cached = _train(folder, tmp_path, "cached", method)
    workers = _train(manifest, tmp_path, "workers", method, num_workers=2)
    for key in ("train/loss", "val/loss", "val/acc"):
        assert math.isfinite(files[key])
        assert cached[key] == pytest.approx(files[key], rel=1e-6, abs=1e-6), key
        assert workers[key] == pytest.approx(files[key], rel=1e-6, abs=1e-6), key


def test_prepared_cache_is_fingerprinted_and_atomic(manifest: Path, tmp_path: Path) -> None:
    from unipair.data.prepared import prepare

    out = tmp_path / "cache"
    folder = prepare(manifest, out, _options())
    meta = json.loads((folder / "prepared.json").read_text())
    stamp = (folder / "prepared.json").stat().st_mtime_ns
    assert prepare(manifest, out, _options()) == folder  # same fingerprint: kept
    assert (folder / "prepared.json").stat().st_mtime_ns == stamp
    changed = {**MODALITIES, "image": {"kind": "image", "size": 28}}
    prepare(manifest, out, _options(modalities=changed))  # another parameter: rebuilt
    assert json.loads((folder / "prepared.json").read_text())["fingerprint"] != meta["fingerprint"]
    assert not list(tmp_path.glob(".cache.*")), "a temporary folder was left"
    # training on a cache whose parameters no longer match the manifest's is refused
    with pytest.raises(DataFormatError, match="changed since `unipair prepare`"):
        load_manifest(manifest, **_options(prepared=str(folder)))
    with pytest.raises(DataFormatError, match="changed since `unipair prepare`"):
        unipair.datasets.create(str(folder), modalities=MODALITIES)


def _broken_copy(manifest: Path, tmp_path: Path) -> Path:
    """The manifest with a missing file, an empty wav, a corrupt video and a good row."""
    table = read_manifest(manifest)
    root = manifest.parent
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00not a video" * 100)
    rows = []
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for m in ("audio", "image", "video"):
            row[m] = str(root / row[m])
    rows[3]["image"] = str(tmp_path / "gone.png")
    rows[7]["audio"] = str(tmp_path / "empty.wav")
    rows[11]["video"] = str(tmp_path / "corrupt.mp4")
    out = tmp_path / "broken.csv"
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert len(table) == len(rows)
    return out


def test_datasets_check_lists_every_bad_row(manifest: Path, tmp_path: Path) -> None:
    broken = _broken_copy(manifest, tmp_path)
    import yaml

    opts = ["-o", "modalities=" + yaml.safe_dump(MODALITIES, default_flow_style=True).strip()]
    res = runner.invoke(app, ["datasets", "check", str(broken), *opts])
    assert res.exit_code == 1, res.output
    for line, column in (("5", "image"), ("9", "audio"), ("13", "video")):
        assert any(line in ln and column in ln for ln in res.output.splitlines()), res.output
    assert "3 of 60 rows have problems" in res.output
    # training refuses the missing and empty files, naming them, unless on_error: skip
    with pytest.raises(DataFormatError, match=r"gone\.png does not exist.*datasets check"):
        load_manifest(broken, **_options())
    data = load_manifest(broken, **_options(on_error="skip"))
    skipped = {(e["line"], e["column"]) for e in data.info["skipped_rows"]}
    assert skipped == {(5, "image"), (9, "audio")}
    assert sum(len(data.split(s)) for s in ("train", "val", "test")) == 58


def test_unknown_label_values_are_named(manifest: Path) -> None:
    with pytest.raises(DataFormatError, match=r"unknown label value\(s\) \['9'\] on line"):
        load_manifest(manifest, **_options(classes=[str(d) for d in range(9)]))
    data = load_manifest(manifest, **_options(classes=[str(d) for d in reversed(range(10))]))
    assert data.info["classes"][0] == "9" and data.spec.num_classes == 10


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda r: r.update(extra="x"), ConfigError, r"column\(s\) \['extra'\] name no config"),
        (lambda r: r.update(label=""), DataFormatError, r"empty label on line"),
        (lambda r: r.update(id="0_0"), DataFormatError, r"id '0_0' repeats the one on line 2"),
        (lambda r: r.update(split="dev"), DataFormatError, r"split column has value\(s\)"),
    ],
    ids=["unknown-column", "empty-label", "duplicate-id", "bad-split"],
)
def test_manifest_mistakes_name_the_row_and_column(manifest, tmp_path, edit, error, message):
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.setdefault("split", "train" if int(row["id"][-1]) < 4 else "test")
    for row in rows:
        for m in ("audio", "image", "video"):
            row[m] = str(manifest.parent / row[m])
    edit(rows[5])
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        names = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(f, fieldnames=names, restval="")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(error, match=message):
        load_manifest(path, **_options())


@pytest.mark.slow
def test_the_documented_commands_run_on_a_folder_of_media(manifest: Path, tmp_path: Path) -> None:
    """docs/data.md: datasets check, prepare, train and compare on a manifest of wav, png and
    mp4/flv files, from the command line."""
    import yaml

    config = tmp_path / "media.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"name": str(manifest), "options": _options()},
        "model": MODEL,
        "train": {"epochs": 1, "batch_size": 16, "num_workers": 1},
        "fabric": {"accelerator": "cpu"},
    }))  # fmt: skip
    modalities = "modalities=" + yaml.safe_dump(MODALITIES, default_flow_style=True).strip()
    res = runner.invoke(app, ["datasets", "check", str(manifest), "-o", modalities])
    assert res.exit_code == 0 and "all 60 rows readable" in res.output, res.output
    folder = tmp_path / "prepared"
    res = runner.invoke(app, ["prepare", str(manifest), "--out", str(folder), "-o", modalities,
                              "-o", "val_fraction=0.2", "-o", "test_fraction=0.2"])  # fmt: skip
    assert res.exit_code == 0 and (folder / "prepared.json").is_file(), res.output
    res = runner.invoke(app, ["train", "-c", str(config), "--method", "mla", "--out",
                              str(tmp_path / "runs"), "--name", "mla",
                              "--set", f"dataset.name={folder}"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "runs" / "mla" / "summary.json").read_text())
    assert summary["prepared"] == str(folder) and summary["modalities"] == ["audio", "image",
                                                                            "video"]  # fmt: skip
    res = runner.invoke(app, ["compare", "-c", str(config), "--methods", "joint", "--seeds", "0",
                              "--no-unimodal", "--out", str(tmp_path / "cmp")])  # fmt: skip
    assert res.exit_code == 0 and (tmp_path / "cmp" / "report.html").is_file(), res.output


def test_recordings_of_different_lengths_are_padded_sequences(manifest: Path) -> None:
    """fbank keeping every frame, no duration: [T, 128] sequences padded per batch, each row's
    mask as long as its own recording, a transformer trained on them; without max_frames a
    clear error."""
    audio = {"kind": "audio", "features": "fbank", "feature_options": {"frames": None}}
    with pytest.raises(ConfigError, match="give max_frames"):
        load_manifest(manifest, **_options(modalities={**MODALITIES, "audio": audio}))
    audio["max_frames"] = 60
    data = load_manifest(manifest, **_options(modalities={**MODALITIES, "audio": audio}))
    assert data.spec["audio"].variable_length and data.spec["audio"].shape == (60, 128)
    ds = data.val
    batch = ds.fetch(torch.arange(len(ds)))
    x, valid = batch.inputs["audio"], batch.valid["audio"]
    reader = ds.readers["audio"]
    for j, row in enumerate(ds.rows.tolist()):
        own = reader.load(str(manifest.parent / ds.table.columns["audio"][row]), False, None)
        n = int(valid[j].sum())
        assert n == len(own) <= 60 and torch.equal(x[j, :n], own)
        if n < x.shape[1]:
            assert not valid[j, n:].any() and x[j, n:].abs().max() == 0
    assert len(set(valid.sum(1).tolist())) > 1  # the recordings do differ in length
    from unipair.data.prepared import prepare

    options = _options(modalities={**MODALITIES, "audio": audio})
    cached = load_manifest(manifest, **options, prepared=str(
        prepare(manifest, manifest.parent / "prepared-seq", options)))  # fmt: skip
    again = cached.val.fetch(torch.arange(len(ds)))
    assert torch.equal(again.inputs["audio"], x) and torch.equal(again.valid["audio"], valid)
    result = unipair.train(
        {"dataset": {"name": str(manifest), "options": _options(
            modalities={**MODALITIES, "audio": audio})},
         "method": {"name": "joint"}, "model": {"width": 16}, "train": {"epochs": 1},
         "logging": {"progress": "none"}, "out": str(manifest.parent / "runs")}
    )  # fmt: skip
    assert result.summary["best_epoch"] == 0


def test_a_decoded_sample_of_another_shape_is_named() -> None:
    """A reader's output that does not fit its row of the batch is an error naming both
    shapes (it is never broadcast into the row)."""
    from unipair.data.readers import create_reader

    reader = create_reader("array", dims=[4, 2])
    with pytest.raises(DataFormatError, match=r"decoded to shape \[1, 2\]; expected \[4, 2\]"):
        reader.finish(torch.ones(1, 2).numpy(), False, None, out=torch.empty(4, 2))


def test_a_manifest_passes_the_dataset_kit(manifest: Path) -> None:
    """The conformance kit's dataset checks on a manifest read with its default readers
    (fbank, 3 frames at 224, images at 224), quantized frames included."""
    from unipair.testing import yield_dataset_checks

    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    split = manifest.parent / "kit.csv"  # the kit loads with default options: splits given
    with open(split, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0], "split"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "split": ("train", "train", "train", "val", "test")[i % 5]})
    for check in yield_dataset_checks(str(split)):
        check(str(split))


def test_a_centre_crop_is_applied_once(manifest: Path) -> None:
    """Evaluation with ``shorter`` > ``size`` (ImageNet's Resize(256) + CenterCrop(224)): the
    files and the prepared cache give exactly the eval transform of the decoded image (the
    frames used to be resized and cropped a second time)."""
    from unipair.data.media.image import read_image
    from unipair.data.prepared import prepare

    image = {"kind": "image", "size": 24, "eval": {"mode": "center_crop", "shorter": 30}}
    options = _options(modalities={**MODALITIES, "image": image})
    files = load_manifest(manifest, **options)
    cache = prepare(manifest, manifest.parent / "prepared-crop", options)
    cached = load_manifest(manifest, **options, prepared=str(cache))
    ds = files.val
    reader = ds.readers["image"]
    rows = torch.arange(len(ds))
    for batch in (ds.fetch(rows), cached.val.fetch(rows), ds.loader_batch(rows.tolist())):
        batch = batch.dequantize()
        for j, row in enumerate(ds.rows.tolist()):
            decoded = read_image(str(manifest.parent / ds.table.columns["image"][row]))
            assert torch.equal(batch.inputs["image"][j], reader.eval(decoded)), row


def test_views_of_the_training_split_keep_the_epochs_augmentation(manifest: Path) -> None:
    """Rows marked missing (``train_missing_rate``) and row subsets (a method's held-out part)
    read the base's augmentation of the batch's epoch: they used to drop the epoch, so every
    epoch saw epoch 0's crops and frames."""
    from unipair.engine.samplers import IndexBatch

    train = load_manifest(manifest, **_options()).train
    hidden = train.with_missing({"audio": torch.arange(len(train)) % 2 == 1})
    subset = train.subset(torch.tensor([3, 0, 1, 2]))
    for epoch in (0, 1, 5):
        base = train.loader_batch(IndexBatch([0, 1, 2, 3], epoch)).dequantize()
        masked = hidden.loader_batch(IndexBatch([0, 1, 2, 3], epoch)).dequantize()
        assert torch.equal(masked.inputs["video"], base.inputs["video"]), epoch
        assert masked.present["audio"].tolist() == [True, False, True, False]
        assert masked.inputs["audio"][1].abs().max() == 0
        picked = subset.__getitems__(IndexBatch([1, 2, 3, 0], epoch))
        assert torch.equal(picked.inputs["image"], base.inputs["image"]), epoch
    first, later = (train.__getitems__(IndexBatch([0, 1], e)) for e in (0, 1))
    assert not torch.equal(first.inputs["video"], later.inputs["video"])


def test_workers_reuse_batch_memory_only_once_the_main_process_let_go(manifest, monkeypatch):
    """A worker writes its next batch into shared memory the main process has freed (no fresh
    pages to fault in: 0.5 ms per MB), never into a batch the main process still holds."""
    import gc
    import os

    from unipair.data import shared_buffers
    from unipair.engine.predict import make_loader
    from unipair.engine.samplers import GlobalBatchSampler

    train = load_manifest(manifest, **_options()).train
    sampler = GlobalBatchSampler(len(train), 4, seed=0)

    def buffer_of(batch) -> int:  # the shared-memory file the worker wrote the frames into
        return os.fstat(batch.inputs["video"].untyped_storage()._share_fd_cpu_()[0]).st_ino

    # a small pool, filled by the kept batches: the rest get fresh buffers (workers fork
    # with the patched capacity); every kept batch is still what it was when received
    monkeypatch.setattr(shared_buffers, "CAPACITY", 4)
    kept = list(make_loader(train, sampler, workers=1))
    assert len(kept) == len(sampler) >= 8
    assert len({buffer_of(b) for b in kept}) == len(kept)
    for batch, rows in zip(kept, sampler, strict=True):
        expected = train.loader_batch(rows)
        for m, x in batch.inputs.items():
            assert torch.equal(x, expected.inputs[m]), m
    del kept, batch
    gc.collect()

    monkeypatch.setattr(shared_buffers, "CAPACITY", 16)
    loader, buffers = make_loader(train, sampler, workers=1), set()
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        for batch in loader:  # each batch is dropped when the next one arrives
            buffers.add(buffer_of(batch))
    # the batches in flight (prefetch 2, the one held, the one being written) reuse buffers
    assert len(buffers) <= 5 < 2 * len(sampler)
