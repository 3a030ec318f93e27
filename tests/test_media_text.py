"""Text tokenisation from local tokenizers and precomputed-feature files, fully offline.

The tokenizer is a small WordPiece vocabulary trained here on generated captions and saved two
ways: as ``tokenizer.json`` and as a Hugging Face directory (``save_pretrained``). Both must give
the same ids, and loading the directory must not open a single socket.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unipair.data.media.arrays import pad_sequences, read_array
from unipair.data.media.text import Tokenize, load_tokenizer
from unipair.errors import ConfigError, DataFormatError, DataNotFoundError

SRC = Path(__file__).resolve().parents[1] / "src"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = [
    "a photo of seven blue cats",
    "Three RED dogs, sitting on a mat!",
    "nine nine nine birds fly over the river at number 42",
    "an unseen word: xylophone",
    "  leading and trailing spaces  ",
]
LONG = " ".join(DIGITS * 6)


def _captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    colours, animals = ["red", "green", "blue"], ["cats", "dogs", "birds", "fish"]
    places = ["on a mat", "in the garden", "over the river", "near the house"]
    return [
        f"a photo of {rng.choice(DIGITS)} {rng.choice(colours)} {rng.choice(animals)} "
        f"{rng.choice(places)}, number {rng.randrange(100)}."
        for _ in range(n)
    ]


def _train(vocab_size: int):
    tokenizers = pytest.importorskip("tokenizers", reason="the `text` extra (tokenizers) is absent")
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        _captions(400),
        trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False
        ),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return tok


@pytest.fixture(scope="module")
def json_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    _train(vocab_size=160).save(str(path))
    return path


@pytest.fixture(scope="module")
def hf_dir(json_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers", reason="the `text` extra (transformers) is absent")
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_file(str(json_path)),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    out = tmp_path_factory.mktemp("hf") / "tokenizer"
    hf.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def special_ids(json_path: Path) -> tuple[int, int]:
    tok = load_tokenizer(json_path)
    return tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")


# ---- tokenisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("max_length", [6, 256])
def test_json_file_and_hf_directory_give_identical_ids(
    json_path: Path, hf_dir: Path, special: bool, max_length: int
) -> None:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

    from_json, from_dir = load_tokenizer(json_path), load_tokenizer(hf_dir)
    assert isinstance(from_json, Tokenizer)
    assert isinstance(from_dir, PreTrainedTokenizerBase)
    a = Tokenize(from_json, max_length, special_tokens=special)
    b = Tokenize(from_dir, max_length, special_tokens=special)
    a, b = pickle.loads(pickle.dumps(a)), pickle.loads(pickle.dumps(b))  # as DataLoader workers
    for text in [*TEXTS, LONG, *_captions(50, seed=1)]:
        ids_a, mask_a = a(text)
        ids_b, mask_b = b(text)
        assert ids_a.tolist() == ids_b.tolist(), text
        assert np.array_equal(mask_a, mask_b)


def test_special_token_policy(json_path: Path, special_ids: tuple[int, int]) -> None:
    """special_tokens=False is MLA's add_special_tokens=False: the same ids, no [CLS]/[SEP]."""
    cls, sep = special_ids
    tok = load_tokenizer(json_path)
    plain = Tokenize(tok, 64, special_tokens=False)
    marked = Tokenize(tok, 64, special_tokens=True)
    for text in TEXTS:
        ids, _ = plain(text)
        with_special, _ = marked(text)
        assert cls not in ids.tolist() and sep not in ids.tolist()
        assert with_special[0] == cls and with_special[-1] == sep
        assert with_special[1:-1].tolist() == ids.tolist()
    assert ids.tolist() == tok.encode(TEXTS[-1], add_special_tokens=False).ids


def test_truncation_at_max_length_keeps_the_special_tokens(
    json_path: Path, special_ids: tuple[int, int]
) -> None:
    tok = load_tokenizer(json_path)
    untruncated, short = (
        Tokenize(tok, 1000, special_tokens=False),
        Tokenize(tok, 10, special_tokens=False),
    )
    full, _ = untruncated(LONG)
    assert len(full) == 60
    cut, mask = short(LONG)
    assert cut.tolist() == full[:10].tolist() and mask.shape == (10,)
    assert len(untruncated(LONG)[0]) == 60 and len(tok.encode(LONG).ids) == 62
    marked, _ = Tokenize(tok, 10, special_tokens=True)(LONG)
    assert marked.tolist() == [special_ids[0], *full[:8].tolist(), special_ids[1]]
    with pytest.raises(DataFormatError, match="60 tokens, more than max_length=10"):
        Tokenize(tok, 10, special_tokens=False, truncation=False)(LONG)
    assert tok.truncation is None, "Tokenize must not change the caller's tokenizer"


def test_ids_are_unpadded_int64_and_the_mask_marks_real_tokens(json_path: Path) -> None:
    """The batch pads, not the tokenizer: a short text stays short, every position is real."""
    tokenize = Tokenize(load_tokenizer(json_path), 256, special_tokens=False)
    outputs = [tokenize(t) for t in TEXTS]
    for ids, mask in outputs:
        assert ids.dtype == np.int64 and mask.dtype == np.bool_
        assert ids.shape == mask.shape and 0 < len(ids) < 256 and mask.all()
    padded, valid = pad_sequences([ids for ids, _ in outputs])
    assert padded.dtype == torch.int64 and padded.shape == (len(TEXTS), max(map(len, padded)))
    assert valid.sum(1).tolist() == [len(ids) for ids, _ in outputs]
    assert (padded[~valid] == 0).all()


def test_empty_text_is_an_error_unless_special_tokens_fill_it(
    json_path: Path, special_ids: tuple[int, int]
) -> None:
    tok = load_tokenizer(json_path)
    for text in ["", "   \n"]:
        with pytest.raises(DataFormatError, match="decodes to no tokens") as err:
            Tokenize(tok, 16, special_tokens=False)(text)
        assert repr(text) in str(err.value)
        ids, mask = Tokenize(tok, 16, special_tokens=True)(text)
        assert ids.tolist() == list(special_ids) and mask.all()
    with pytest.raises(DataFormatError, match="expected a text string"):
        Tokenize(tok, 16, special_tokens=False)(None)  # type: ignore[arg-type]


def test_max_length_must_leave_room_for_text(json_path: Path) -> None:
    tok = load_tokenizer(json_path)
    with pytest.raises(ConfigError, match="max_length=2"):
        Tokenize(tok, 2, special_tokens=True)
    with pytest.raises(ConfigError, match="max_length=0"):
        Tokenize(tok, 0, special_tokens=False)
    assert len(Tokenize(tok, 3, special_tokens=True)(LONG)[0]) == 3


def test_params_fingerprint_the_vocabulary_and_every_option(
    json_path: Path, hf_dir: Path, tmp_path: Path
) -> None:
    tok = load_tokenizer(json_path)
    base = Tokenize(tok, 32, special_tokens=False).params()
    assert base == Tokenize(load_tokenizer(json_path), 32, special_tokens=False).params()
    assert set(base) == {"tokenizer_sha256", "max_length", "special_tokens", "truncation"}
    for other in [
        Tokenize(tok, 33, special_tokens=False),
        Tokenize(tok, 32, special_tokens=True),
        Tokenize(tok, 32, special_tokens=False, truncation=False),
    ]:
        assert other.params() != base
    other_vocab = tmp_path / "tokenizer.json"
    _train(vocab_size=120).save(str(other_vocab))
    changed = Tokenize(load_tokenizer(other_vocab), 32, special_tokens=False).params()
    assert changed["tokenizer_sha256"] != base["tokenizer_sha256"]

    # transformers rewrites its backend's truncation on every call: the digest ignores that
    hf = load_tokenizer(hf_dir)
    before = Tokenize(hf, 32, special_tokens=False).params()
    hf(LONG, truncation=True, max_length=5)
    assert Tokenize(hf, 32, special_tokens=False).params() == before
    copy = tmp_path / "copy"
    hf.save_pretrained(str(copy))
    assert Tokenize(load_tokenizer(copy), 32, special_tokens=False).params() == before
    added = load_tokenizer(copy)
    added.add_tokens(["xylophone"])
    assert Tokenize(added, 32, special_tokens=False).params() != before


def test_python_tokenizer_directory(tmp_path: Path) -> None:
    """A tokenizer without a `tokenizers` backend (ByT5: bytes + 3) goes through the same API."""
    transformers = pytest.importorskip("transformers", reason="the `text` extra is absent")
    transformers.ByT5Tokenizer().save_pretrained(str(tmp_path / "byt5"))
    tok = load_tokenizer(tmp_path / "byt5")
    assert getattr(tok, "backend_tokenizer", None) is None
    ids, mask = Tokenize(tok, 8, special_tokens=False)("hi")
    assert ids.tolist() == [ord("h") + 3, ord("i") + 3] and mask.all()
    ids, _ = Tokenize(tok, 4, special_tokens=True)("hello")
    assert ids.tolist() == [ord("h") + 3, ord("e") + 3, ord("l") + 3, tok.eos_token_id]
    with pytest.raises(DataFormatError, match="decodes to no tokens"):
        Tokenize(tok, 8, special_tokens=False)("")
    params = Tokenize(tok, 8, special_tokens=False).params()
    tok.save_pretrained(str(tmp_path / "copy"))
    assert Tokenize(load_tokenizer(tmp_path / "copy"), 8, special_tokens=False).params() == params
    tok.add_tokens(["<new>"])
    assert Tokenize(tok, 8, special_tokens=False).params() != params


# ---- loading: offline, errors -----------------------------------------------------------------

NO_NETWORK = """
import json, os, socket, sys, urllib.request
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args))
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from unipair.data.media.text import Tokenize, load_tokenizer
tok = load_tokenizer(sys.argv[1])
ids = Tokenize(tok, 64, special_tokens=True)(sys.argv[2])[0].tolist()
during = list(attempts)
import huggingface_hub.constants as hub
restored = [os.environ.get("HF_HUB_OFFLINE"), hub.is_offline_mode()]
try:  # the guard catches a real connection attempt: the check above can fail
    urllib.request.urlopen("http://huggingface.co", timeout=2)
except OSError:
    pass
print(json.dumps({"ids": ids, "during": during, "restored": restored, "control": attempts}))
"""


def test_hf_directory_loads_without_touching_the_network(
    json_path: Path, hf_dir: Path, tmp_path: Path
) -> None:
    """A fresh interpreter with every socket call refused and no offline variable set."""
    offline_vars = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    env = {k: v for k, v in os.environ.items() if k not in offline_vars}
    nowhere = "http://127.0.0.1:9"
    env.update(
        PYTHONPATH=str(SRC),
        HF_HOME=str(tmp_path / "hf_home"),
        HF_ENDPOINT=nowhere,
        HTTP_PROXY=nowhere,
        HTTPS_PROXY=nowhere,
        http_proxy=nowhere,
        https_proxy=nowhere,
        NO_PROXY="",
    )
    text = TEXTS[1]
    proc = subprocess.run(
        [sys.executable, "-c", NO_NETWORK, str(hf_dir), text],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["during"] == [], f"socket calls while loading: {report['during']}"
    assert report["control"], "the socket guard did not see a deliberate connection"
    assert report["restored"] == [None, False], "the offline switch leaked past the call"
    expected = Tokenize(load_tokenizer(json_path), 64, special_tokens=True)(text)[0]
    assert report["ids"] == expected.tolist()


def test_hf_load_is_local_only_with_the_hub_offline(
    hf_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub
    import transformers

    seen: list[tuple[bool, dict]] = []
    original = transformers.AutoTokenizer.from_pretrained

    def spy(path: str, **kwargs: object) -> object:
        seen.append((hub.is_offline_mode(), kwargs))
        return original(path, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    load_tokenizer(hf_dir)
    ((offline, kwargs),) = seen
    assert offline, "the hub was online during the load"
    assert kwargs["local_files_only"] is True and kwargs["trust_remote_code"] is False
    assert not hub.is_offline_mode(), "the offline switch leaked past the call"
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(DataFormatError):  # restored after a failed load too
        load_tokenizer(tmp_path)
    assert len(seen) == 2 and seen[1][0] and not hub.is_offline_mode()


def test_loading_errors_name_the_path(json_path: Path, hf_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="the `text` extra (transformers) is absent")
    missing = tmp_path / "nowhere" / "tokenizer.json"
    with pytest.raises(DataNotFoundError, match=str(missing)):
        load_tokenizer(missing)
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "no_dir")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("not a tokenizer")
    with pytest.raises(DataFormatError, match=f"{empty} holds no tokenizer file"):
        load_tokenizer(empty)

    corrupt = tmp_path / "tokenizer.json"
    corrupt.write_text('{"model": {"type": "WordPiece", "vocab": ')
    with pytest.raises(DataFormatError, match=f"cannot read tokenizer file {corrupt}"):
        load_tokenizer(corrupt)
    vocab_txt = tmp_path / "vocab.txt"
    vocab_txt.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(DataFormatError, match=str(vocab_txt)):
        load_tokenizer(vocab_txt)

    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    config = (hf_dir / "tokenizer_config.json").read_text()
    (broken_dir / "tokenizer_config.json").write_text(config)
    (broken_dir / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataFormatError, match=f"cannot load tokenizer directory {broken_dir}"):
        load_tokenizer(broken_dir)


def test_missing_packages_name_the_extra(
    json_path: Path, hf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = load_tokenizer(json_path)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'unipair\[text\]'"):
        load_tokenizer(hf_dir)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"pip install 'unipair\[text\]'"):
        load_tokenizer(json_path)
    with pytest.raises(ImportError, match=r"pip install 'unipair\[text\]'"):
        Tokenize(tok, 8, special_tokens=False)


def test_importing_the_modules_loads_no_text_package() -> None:
    probe = (
        "import sys, unipair.data.media.text, unipair.data.media.arrays\n"
        "print(sorted({'tokenizers', 'transformers', 'huggingface_hub'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


# ---- precomputed features ---------------------------------------------------------------------


class _Opaque:
    """An arbitrary pickled object: torch.load(weights_only=True) must refuse it."""


def test_read_npy_fixed_and_variable_length(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fixed = rng.normal(size=(3, 4))
    np.save(tmp_path / "fixed.npy", fixed)
    out = read_array(tmp_path / "fixed.npy", expect_dims=(3, 4))
    assert out.dtype == np.float32 and out.flags.writeable
    np.testing.assert_array_equal(out, fixed.astype(np.float32))
    for t in (1, 7, 50):
        seq = rng.normal(size=(t, 5)).astype(np.float32)
        np.save(tmp_path / f"seq{t}.npy", seq)
        np.testing.assert_array_equal(
            read_array(tmp_path / f"seq{t}.npy", expect_dims=(None, 5)), seq
        )
    ids = np.array([[101, 7, 2000]], dtype=np.int64)  # MLA's <stem>_token.npy layout
    np.save(tmp_path / "ids.npy", ids)
    assert read_array(tmp_path / "ids.npy", dtype=np.int64).tolist() == ids.tolist()
    with pytest.raises(DataFormatError, match="expected integers"):
        read_array(tmp_path / "fixed.npy", dtype=np.int64)
    with pytest.raises(DataFormatError, match="beyond the range of int8"):
        read_array(tmp_path / "ids.npy", dtype=np.int8)


def test_read_npy_memory_map(tmp_path: Path) -> None:
    seq = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "seq.npy", seq)
    mapped = read_array(tmp_path / "seq.npy", mmap=True)
    assert not mapped.flags.writeable and not mapped.flags.owndata
    np.testing.assert_array_equal(mapped, seq)
    converted = read_array(tmp_path / "seq.npy", dtype=np.float64, mmap=True)
    assert converted.dtype == np.float64 and converted.flags.writeable


def test_read_pt_tensor_or_dict_with_one_tensor(tmp_path: Path) -> None:
    seq = torch.randn(6, 20, generator=torch.Generator().manual_seed(0))
    torch.save(seq, tmp_path / "plain.pt")
    torch.save({"vision": seq.to(torch.float64)}, tmp_path / "dict.pth")
    torch.save(seq.to(torch.bfloat16).requires_grad_(), tmp_path / "bf16.pt")
    for name in ("plain.pt", "dict.pth"):
        out = read_array(tmp_path / name, expect_dims=(None, 20))
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, seq.numpy())
    np.testing.assert_array_equal(
        read_array(tmp_path / "bf16.pt"), seq.to(torch.bfloat16).float().numpy()
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([torch.zeros(3)], "holds list, not a tensor"),
        ({"a": torch.zeros(3), "b": torch.zeros(3)}, r"holds a dict with keys \['a', 'b'\]"),
        ({"a": 1}, r"holds a dict with keys \['a'\]"),
        (_Opaque(), "weights_only=True refuses"),
    ],
    ids=["list", "two-tensors", "dict-of-int", "object"],
)
def test_read_pt_refuses_anything_but_one_tensor(
    tmp_path: Path, content: object, message: str
) -> None:
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(DataFormatError, match=message) as err:
        read_array(path)
    assert str(path) in str(err.value)


def test_read_array_rejects_bad_values_shapes_and_files(tmp_path: Path) -> None:
    nan = np.ones((4, 5), dtype=np.float32)
    nan[2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    torch.save(torch.tensor([[1.0, float("inf")]]), tmp_path / "inf.pt")
    np.save(tmp_path / "huge.npy", np.array([[1e39]]))
    np.save(tmp_path / "complex.npy", np.ones((2, 2), dtype=np.complex64))
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    np.save(tmp_path / "empty.npy", np.zeros((0, 5), dtype=np.float32))
    np.save(tmp_path / "seq.npy", np.zeros((7, 4), dtype=np.float32))
    (tmp_path / "garbage.npy").write_bytes(b"not an array at all")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    np.savez(tmp_path / "arrays.npz", a=np.zeros(3))
    cases = [
        ("nan.npy", {}, DataFormatError, "contains NaN or infinite values"),
        ("inf.pt", {}, DataFormatError, "contains NaN or infinite values"),
        ("huge.npy", {}, DataFormatError, "beyond the range of float32"),
        ("complex.npy", {}, DataFormatError, "complex64 values; expected real numbers"),
        ("strings.npy", {}, DataFormatError, "expected real numbers"),
        ("empty.npy", {}, DataFormatError, r"holds no values \(shape \(0, 5\)\)"),
        ("seq.npy", {"expect_dims": (None, 5)}, DataFormatError, r"\(7, 4\); expected \(\?, 5\)"),
        ("seq.npy", {"expect_dims": (None, 4, 1)}, DataFormatError, r"expected \(\?, 4, 1\)"),
        ("garbage.npy", {}, DataFormatError, "cannot read array file"),
        ("garbage.pt", {}, DataFormatError, "cannot read array file"),
        ("arrays.npz", {}, DataFormatError, "unknown suffix"),
        ("absent.npy", {}, DataNotFoundError, "does not exist"),
    ]
    for name, kwargs, error, message in cases:
        with pytest.raises(error, match=message) as err:
            read_array(tmp_path / name, **kwargs)
        assert str(tmp_path / name) in str(err.value), name
    with pytest.raises(ConfigError, match="dtype must be a float or integer"):
        read_array(tmp_path / "seq.npy", dtype=np.complex64)


# ---- padding ----------------------------------------------------------------------------------


def test_pad_sequences_features_and_ids() -> None:
    feats = [np.ones((3, 2), np.float32), torch.full((1, 2), 2.0), np.zeros((0, 2), np.float32)]
    out, mask = pad_sequences(feats, pad_value=-1.0)
    assert out.shape == (3, 3, 2) and out.dtype == torch.float32
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    assert (out[1, 1:] == -1).all() and (out[2] == -1).all() and (out[0] == 1).all()
    ids, mask = pad_sequences([np.array([5, 6], np.int64), np.array([7], np.int64)])
    assert ids.dtype == torch.int64 and ids.tolist() == [[5, 6], [7, 0]]
    with pytest.raises(DataFormatError, match=r"sequence 1 has shape \(2, 3\); expected \(L, 2\)"):
        pad_sequences([np.zeros((2, 2)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="at least one sequence"):
        pad_sequences([])


@st.composite
def sequence_batches(draw) -> tuple[list[np.ndarray], float]:
    trailing = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    lengths = draw(st.lists(st.integers(0, 6), min_size=1, max_size=5))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    seqs = [rng.normal(size=(n, *trailing)).astype(np.float32) for n in lengths]
    return seqs, draw(st.sampled_from([0.0, -1.0, 7.5]))


@settings(max_examples=80, deadline=None)
@given(sequence_batches(), st.booleans())
def test_padding_never_changes_the_valid_part(batch, as_tensors: bool) -> None:
    seqs, pad = batch
    inputs = [torch.from_numpy(s) for s in seqs] if as_tensors else seqs
    out, mask = pad_sequences(inputs, pad_value=pad)
    lengths = [len(s) for s in seqs]
    assert out.shape == (len(seqs), max(lengths), *seqs[0].shape[1:])
    assert mask.dtype == torch.bool and mask.shape == out.shape[:2]
    assert mask.sum(1).tolist() == lengths
    for i, s in enumerate(seqs):
        assert torch.equal(out[i, : len(s)], torch.from_numpy(s))
        assert mask[i, : len(s)].all() and not mask[i, len(s) :].any()
        assert (out[i, len(s) :] == pad).all()
