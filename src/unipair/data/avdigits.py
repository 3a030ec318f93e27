"""Audio-visual digits: FSDD spoken digits paired by label with MNIST test images.

Each of FSDD's 3000 recordings (``{digit}_{speaker}_{index}.wav``) is paired with a distinct
MNIST t10k image of the same digit, drawn by ``pair_seed``; no image is used twice, so none is
shared across splits. In joint training the image is the strong modality and audio the lazy
one, as in AV-MNIST.

Splits:

* ``"fsdd"`` (default): the dataset's own convention, recording index 0-4 is test (300
  recordings, every speaker); val is carved from the rest, stratified by class (``seed``).
* ``"speaker"``: speaker-independent test: every recording of ``test_speakers`` (default
  ``("theo",)``) is test. Val comes from the *other* speakers, so it is speaker-dependent
  (it measures fit to known voices) unless ``val_speakers`` names held-out speakers for it.

The log-mels, paired images and metadata are cached as one ``.npz`` keyed by a content hash of
the source files and every preprocessing parameter, so a changed file or parameter rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unipair.data.assemble import assemble
from unipair.data.audio import LogMel, read_wav
from unipair.data.dataset import MultimodalData, fingerprint
from unipair.data.idx import read_idx
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError
from unipair.io import atomic_path

__all__ = [
    "DEFAULT_TEST_SPEAKERS",
    "AVDigitsArrays",
    "default_cache_dir",
    "load_avdigits",
    "read_avdigits",
]

SAMPLE_RATE = 8000
NUM_CLASSES = 10
DEFAULT_TEST_SPEAKERS = ("theo",)
FSDD_PATTERN = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$")
FSDD_LAYOUT = "{digit}_{speaker}_{index}.wav files (FSDD's recordings/ folder)"
MNIST_IMAGES = "t10k-images-idx3-ubyte"
MNIST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_LAYOUT = f"{MNIST_IMAGES}[.gz] and {MNIST_LABELS}[.gz] (MNIST test set, IDX format)"
#: bump when the cached arrays change meaning, so old caches are never reused
CACHE_VERSION = 1
SOURCE = "FSDD recordings (CC BY-SA 4.0) paired by digit with MNIST t10k images (CC BY-SA 3.0)"


@dataclass(frozen=True)
class AVDigitsArrays:
    """The processed, paired arrays in canonical order (sorted by digit, speaker, index)."""

    audio: np.ndarray  # float32 [N, 1, n_mels, frames] log-mel
    image: np.ndarray  # uint8 [N, 28, 28]
    label: np.ndarray  # int64 [N]
    speaker: np.ndarray  # str [N]
    index: np.ndarray  # int64 [N], the repetition index in the file name
    file: np.ndarray  # str [N], file names
    mnist_index: np.ndarray  # int64 [N], row of the paired image in the MNIST t10k files
    features: dict[str, Any]  # LogMel parameters
    key: str
    cache: str  # "hit" or "built"
    cache_path: Path | None


def default_cache_dir() -> Path:
    """``$UNIPAIR_CACHE`` or ``~/.cache/unipair``."""
    env = os.environ.get("UNIPAIR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unipair"


def _root(given: str | Path | None, env: str, what: str, layout: str) -> Path:
    if given is None:
        value = os.environ.get(env)
        if not value:
            raise DataNotFoundError(
                f"no {what} root: pass it or set ${env} to a folder of {layout}"
            )
        given = value
    root = Path(given).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"{what} root {root} is not a directory; expected {layout}")
    return root


def _fsdd_files(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray, np.ndarray]:
    """Recordings sorted by (digit, speaker, index); every ``*.wav`` must match the pattern."""
    found = []
    for p in root.iterdir():
        if p.name.startswith(".") or p.suffix.lower() != ".wav":
            continue
        m = FSDD_PATTERN.match(p.name)
        if m is None:
            raise DataFormatError(f"{p}: file name does not match {FSDD_LAYOUT}")
        found.append((int(m[1]), m[2], int(m[3]), p))
    if not found:
        raise DataNotFoundError(f"no recordings in {root}; expected {FSDD_LAYOUT}")
    found.sort(key=lambda r: r[:3])
    label = np.array([r[0] for r in found], dtype=np.int64)
    speaker = np.array([r[1] for r in found], dtype=str)
    index = np.array([r[2] for r in found], dtype=np.int64)
    return [r[3] for r in found], label, speaker, index


def _mnist_files(root: Path) -> tuple[Path, Path]:
    out = []
    for stem in (MNIST_IMAGES, MNIST_LABELS):
        options = [root / f"{stem}.gz", root / stem]
        hit = next((p for p in options if p.is_file()), None)
        if hit is None:
            raise DataNotFoundError(
                f"missing {options[0]} (or {options[1]}); expected {MNIST_LAYOUT}"
            )
        out.append(hit)
    return out[0], out[1]


def _read_mnist(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, ndim=3, dtype="u1")
    labels = read_idx(labels_path, ndim=1, dtype="u1").astype(np.int64)
    if images.shape[1:] != (28, 28):
        raise DataFormatError(f"{images_path}: expected 28x28 images, found {images.shape[1:]}")
    if len(images) != len(labels):
        raise DataFormatError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataFormatError(f"{labels_path}: labels outside 0..9")
    return images, labels


def _pair(label: np.ndarray, mnist_labels: np.ndarray, seed: int) -> np.ndarray:
    """A distinct MNIST row of the same digit for every recording, drawn without replacement."""
    rng = np.random.default_rng(seed)
    out = np.full(len(label), -1, dtype=np.int64)
    for d in range(NUM_CLASSES):
        rows = np.flatnonzero(label == d)
        pool = rng.permutation(np.flatnonzero(mnist_labels == d))
        if len(pool) < len(rows):
            raise DataFormatError(
                f"digit {d}: {len(rows)} recordings but only {len(pool)} MNIST images to pair"
            )
        out[rows] = pool[: len(rows)]
    return out


def _load_cache(path: Path, key: str, n: int, mel: LogMel) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent, unreadable or not what ``key`` describes."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    names = ("audio", "image", "label", "speaker", "index", "file_name", "mnist_index", "key")
    if not all(k in arrays for k in names) or str(arrays["key"]) != key:
        return None
    if arrays["audio"].shape != (n, 1, mel.n_mels, mel.frames) or len(arrays["label"]) != n:
        return None
    return arrays


def read_avdigits(
    fsdd_root: str | Path | None = None,
    mnist_root: str | Path | None = None,
    n_mels: int = 40,
    frames: int = 100,
    pair_seed: int = 0,
    cache_dir: str | Path | None = None,
) -> AVDigitsArrays:
    """Read (or load from cache) the paired arrays, before any split or standardisation.

    The cache key hashes file names, sizes and contents of every source file plus every
    preprocessing parameter, so reading all files (~37 MB) on each call is the price of a
    cache that cannot go stale.
    """
    fsdd = _root(fsdd_root, "UNIPAIR_FSDD_ROOT", "FSDD", FSDD_LAYOUT)
    mnist = _root(mnist_root, "UNIPAIR_MNIST_ROOT", "MNIST", MNIST_LAYOUT)
    paths, label, speaker, index = _fsdd_files(fsdd)
    images_path, labels_path = _mnist_files(mnist)
    mel = LogMel(sample_rate=SAMPLE_RATE, n_mels=n_mels, frames=frames)

    h = hashlib.sha256()
    blobs = []
    for p in [*paths, images_path, labels_path]:
        blob = p.read_bytes()
        h.update(f"{p.name}\x00{len(blob)}\x00".encode())
        h.update(hashlib.sha256(blob).digest())
        blobs.append(blob)
    key = fingerprint(
        "avdigits",
        CACHE_VERSION,
        h.hexdigest(),
        sorted(mel.params().items()),
        ("pair_seed", int(pair_seed)),
    )
    cache_path: Path | None = Path(cache_dir or default_cache_dir()).expanduser()
    cache_path = cache_path / f"avdigits-{key}.npz"

    cached = _load_cache(cache_path, key, len(paths), mel)
    if cached is not None:
        return AVDigitsArrays(
            audio=cached["audio"],
            image=cached["image"],
            label=cached["label"].astype(np.int64),
            speaker=cached["speaker"],
            index=cached["index"].astype(np.int64),
            file=cached["file_name"],
            mnist_index=cached["mnist_index"].astype(np.int64),
            features=mel.params(),
            key=key,
            cache="hit",
            cache_path=cache_path,
        )

    waves = [
        read_wav(p, SAMPLE_RATE, data=b) for p, b in zip(paths, blobs[: len(paths)], strict=True)
    ]
    audio = mel.batch(waves).numpy()
    mnist_images, mnist_labels = _read_mnist(images_path, labels_path)
    mnist_index = _pair(label, mnist_labels, int(pair_seed))
    arrays = {
        "audio": audio,
        "image": mnist_images[mnist_index],
        "label": label,
        "speaker": speaker,
        "index": index,
        "file_name": np.array([p.name for p in paths], dtype=str),
        "mnist_index": mnist_index,
        "key": np.array(key),
    }
    try:
        with atomic_path(cache_path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)  # a file object: given a path, np.savez appends .npz
    except OSError as e:
        warnings.warn(f"could not write the avdigits cache {cache_path}: {e}", stacklevel=2)
        cache_path = None
    return AVDigitsArrays(
        audio=audio,
        image=arrays["image"],
        label=label,
        speaker=speaker,
        index=index,
        file=arrays["file_name"],
        mnist_index=mnist_index,
        features=mel.params(),
        key=key,
        cache="built",
        cache_path=cache_path,
    )


def _speakers(value: Sequence[str] | str | None, what: str, known: list[str]) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value or ())
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"{what}: unknown speaker(s) {unknown}; the recordings have {known}")
    return names


def load_avdigits(
    fsdd_root: str | Path | None = None,
    mnist_root: str | Path | None = None,
    seed: int = 0,
    split: str = "fsdd",
    val_fraction: float = 0.1,
    test_speakers: Sequence[str] | str | None = None,
    val_speakers: Sequence[str] | str | None = None,
    n_mels: int = 40,
    frames: int = 100,
    pair_seed: int = 0,
    cache_dir: str | Path | None = None,
    standardize: bool = True,
) -> MultimodalData:
    """``audio`` [1, n_mels, frames] log-mel and ``image`` [1, 28, 28] in [0, 1]; 10 classes.

    Roots default to ``$UNIPAIR_FSDD_ROOT`` / ``$UNIPAIR_MNIST_ROOT``. ``pair_seed`` fixes the
    pairing independently of ``seed`` (which draws val), so runs over several seeds share the
    same audio-image pairs and, with ``split="fsdd"``, the same test set. 100 frames of 10 ms
    hold 99% of FSDD recordings whole (longer ones are centre-cropped). With ``val_speakers``
    the val set is those speakers' recordings and ``val_fraction`` is not used.
    """
    if split not in ("fsdd", "speaker"):
        raise ConfigError(f"unknown split {split!r}; expected 'fsdd' or 'speaker'")
    if split == "fsdd" and (test_speakers is not None or val_speakers is not None):
        raise ConfigError("test_speakers / val_speakers only apply to split='speaker'")
    a = read_avdigits(fsdd_root, mnist_root, n_mels, frames, pair_seed, cache_dir)
    known = sorted(set(a.speaker.tolist()))
    rows = np.arange(len(a.label))
    idx: dict[str, np.ndarray]
    if split == "fsdd":
        test = a.index < 5
        idx = {"train": rows[~test], "test": rows[test]}
        protocol = "fsdd: recording index 0-4 is test; val stratified from the rest"
    else:
        chosen = DEFAULT_TEST_SPEAKERS if test_speakers is None else test_speakers
        tests = _speakers(chosen, "test_speakers", known)
        vals = _speakers(val_speakers, "val_speakers", known)
        if not tests or set(tests) & set(vals) or len(set(tests) | set(vals)) >= len(known):
            raise ConfigError(
                f"test_speakers {list(tests)} must be non-empty, disjoint from val_speakers "
                f"{list(vals)}, and together leave at least one of {known} for training"
            )
        test = np.isin(a.speaker, tests)
        val = np.isin(a.speaker, vals)
        idx = {"train": rows[~test & ~val], "test": rows[test]}
        if vals:
            idx["val"] = rows[val]
            protocol = f"speaker: test speakers {list(tests)}, val speakers {list(vals)}"
        else:
            protocol = (
                f"speaker: test speakers {list(tests)}; val stratified from the other speakers' "
                "recordings (speaker-dependent)"
            )
    if not len(idx["test"]) or not len(idx["train"]):
        raise ConfigError(f"split {split!r} leaves an empty train or test set")

    inputs = {
        "audio": a.audio,
        "image": (a.image.astype(np.float32) / 255.0)[:, None],
    }
    result = assemble(
        "avdigits",
        inputs,
        a.label,
        seed=seed,
        split=idx,
        val_fraction=val_fraction,
        standardize=standardize,
        num_classes=NUM_CLASSES,
        source=f"avdigits:{a.key}:{protocol}",
        info={
            "source": SOURCE,
            "protocol": protocol,
            "pair_seed": pair_seed,
            "audio_features": a.features,
            "cache": a.cache,
            "cache_path": None if a.cache_path is None else str(a.cache_path),
        },
    )
    result.info["speakers"] = {
        s: sorted(set(a.speaker[result.split(s).index.numpy()].tolist()))
        for s in ("train", "val", "test")
    }
    return result
