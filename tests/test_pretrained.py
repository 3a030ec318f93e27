"""Encoders on local weights: key layouts, strictness, provenance, channel adaptation, text
models from a local directory, freezing, and one real pretrained file nobody here made.

No ResNet or BERT weights ship in any wheel, so the image tests build a ResNet-18 in
torchvision's key layout with random (non-trivial) weights, save it in every accepted format and
load it back: the loaded backbone must give the source's features. The source is
:class:`TorchvisionLayoutResNet18`, written here after torchvision's ``resnet.py`` (its 122 keys
and shapes were checked against torchvision 0.28.0's ``resnet18()``), and, where they import,
timm's and torchvision's own ``resnet18``. Here neither does: timm imports torchvision, and
PyPI's torchvision wheels are CUDA builds whose operators do not load beside this CPU torch.
The ``timm:``/``torchvision:`` glue therefore also runs against a stand-in module exposing the
parts of their API the encoders use (``create_model``/``pretrained_cfg``/``group_matcher``,
``models.get_model``), with the same test bodies that run on the real packages elsewhere.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from unipair.errors import ConfigError, DataFormatError, DataNotFoundError, UnknownNameError
from unipair.models.encoders import ENCODERS, ResNet18Encoder, create_encoder
from unipair.models.pretrained import (
    RESNET18_KEY_TABLE,
    FreezeSpec,
    adapt_input_conv,
    load_weights,
    read_state_dict,
    rename_resnet18,
)
from unipair.testing import yield_encoder_checks

SRC = Path(__file__).resolve().parents[1] / "src"
WHEELS = Path(sys.prefix) / "wheels"  # filled by `make` (the dev install step)
SILERO_WHEEL = WHEELS / "silero_vad-6.2.3-py3-none-any.whl"


# ------------------------------------------------------------------------------- sources
class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionLayoutResNet18(nn.Module):
    """torchvision's ResNet-18: names, shapes and computation; ``num_classes=0`` drops ``fc``
    as timm does, ``in_chans`` sets the first convolution."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), 1):
            setattr(
                self, f"layer{i}", nn.Sequential(_Block(cin, cout, stride), _Block(cout, cout, 1))
            )
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes) if num_classes else nn.Identity()

    def features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Every weight and BatchNorm statistic random, so that a swapped key changes the output."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: Tensor, scale: float, offset: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * scale + offset)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                rand(m.weight, 0.2, 1.0)
                rand(m.bias, 0.1)
                rand(m.running_mean, 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.Conv2d):
                rand(m.weight, math.sqrt(2 / m.weight[0].numel()))
            elif isinstance(m, nn.Linear):
                rand(m.weight, 0.05)
                rand(m.bias, 0.1)
    return model.eval()


def _source(kind: str) -> tuple[dict[str, Tensor], object]:
    """A ResNet-18 state dict in torchvision's layout (with ``fc``) and its feature function."""
    if kind == "reference":
        model = _randomise(TorchvisionLayoutResNet18(num_classes=10), 0)
        return model.state_dict(), model.features
    if kind == "timm":
        timm = _real("timm")
        model = _randomise(timm.create_model("resnet18", num_classes=10), 0)
        return model.state_dict(), lambda x: model.forward_head(
            model.forward_features(x), pre_logits=True
        )
    tv = _real("torchvision")
    model = _randomise(tv.models.resnet18(num_classes=10), 0)
    features = _randomise(tv.models.resnet18(num_classes=10), 0)
    features.fc = nn.Identity()
    return model.state_dict(), features


def _real(package: str) -> types.ModuleType:
    try:
        return __import__(package)
    except (ImportError, RuntimeError) as e:
        pytest.skip(f"{package} does not import here ({e}); `make` installs no vision extra")


def _save(sd: dict[str, Tensor], path: Path, fmt: str) -> Path:
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = path.with_suffix(".safetensors")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "timm-checkpoint":  # what timm's train.py writes
        torch.save({"epoch": 3, "arch": "resnet18", "state_dict": sd, "metric": 0.5}, path)
    elif fmt == "torchvision-checkpoint":  # what torchvision's reference scripts write
        torch.save({"model": sd, "optimizer": {}, "epoch": 3}, path)
    elif fmt == "ddp":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    else:
        torch.save(sd, path)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


X = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(5))


def _close(a: Tensor, b: Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------- key layouts
def test_the_key_table_maps_every_torchvision_key_both_ways() -> None:
    """Every key of torchvision's layout except ``fc`` has a unipair twin, and back."""
    tv = TorchvisionLayoutResNet18().state_dict()
    mine = ResNet18Encoder((3, 32, 32), 512).backbone.state_dict()
    assert len(tv) == 122  # torchvision 0.28's resnet18(): 120 + fc.weight, fc.bias
    mapped = rename_resnet18(tv, "unipair")
    assert set(mapped) - {"fc.weight", "fc.bias"} == set(mine)
    assert all(mapped[k].shape == mine[k].shape for k in mine)
    assert rename_resnet18(mapped, "torchvision").keys() == tv.keys()
    assert ("layer2.0.downsample.", "layers.2.shortcut.") in RESNET18_KEY_TABLE


@pytest.mark.parametrize("source", ["reference", "timm", "torchvision"])
@pytest.mark.parametrize(
    "fmt", ["state-dict", "timm-checkpoint", "torchvision-checkpoint", "ddp", "safetensors"]
)
def test_resnet18_weights_give_the_source_features(tmp_path: Path, source: str, fmt: str) -> None:
    sd, features = _source(source)
    path = _save(sd, tmp_path / "resnet18.pth", fmt)
    enc = create_encoder("resnet18", (3, 40, 40), 16, weights=str(path)).eval()
    with torch.no_grad():
        _close(enc.backbone(X), features(X))
    info = enc.weights_info
    assert info["path"] == str(path.resolve())
    assert (info["sha256"], info["size"]) == (_sha256(path), path.stat().st_size)
    assert info["key_map"] == "torchvision->unipair"
    assert (info["missing"], info["unexpected"]) == ([], [])
    assert info["dropped"] == ["fc.bias", "fc.weight"]


def test_unipair_layout_files_load_unchanged_into_resnet18(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = _randomise(ResNet18Encoder((3, 32, 32), 512), 1).backbone
    path = tmp_path / "mine.pt"
    torch.save(src.state_dict(), path)
    enc = create_encoder("resnet18", (3, 40, 40), 16, weights=str(path)).eval()
    with torch.no_grad():
        _close(enc.backbone(X), src(X))
    assert enc.weights_info["key_map"] == "none" and enc.weights_info["dropped"] == []


def test_without_weights_resnet18_is_unchanged() -> None:
    """No ``weights``: the same random initialisation as before the option existed."""
    torch.manual_seed(3)
    a = ResNet18Encoder((3, 32, 32), 16)
    torch.manual_seed(3)
    b = create_encoder("resnet18", (3, 32, 32), 16)
    assert a.weights_info is None
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), n


def _renamed(tmp_path: Path) -> tuple[Path, dict[str, Tensor]]:
    sd, _ = _source("reference")
    sd = dict(sd)
    sd["layer3.1.bn2.running_variance"] = sd.pop("layer3.1.bn2.running_var")
    return _save(sd, tmp_path / "renamed.pth", "state-dict"), sd


def test_a_renamed_key_fails_the_load_and_is_named(tmp_path: Path) -> None:
    path, _ = _renamed(tmp_path)
    with pytest.raises(DataFormatError) as e:
        create_encoder("resnet18", (3, 40, 40), 16, weights=str(path))
    msg = str(e.value)
    assert str(path) in msg and "strict: false" in msg
    assert "missing keys: layers.5.bn2.running_var" in msg
    assert "unexpected keys: layers.5.bn2.running_variance" in msg


def test_strict_false_loads_the_rest_and_reports_what_was_not_loaded(tmp_path: Path) -> None:
    path, sd = _renamed(tmp_path)
    torch.manual_seed(0)
    enc = create_encoder("resnet18", (3, 40, 40), 16, weights=str(path), strict=False)
    info = enc.weights_info
    assert info["missing"] == ["layers.5.bn2.running_var"]
    assert info["unexpected"] == ["layers.5.bn2.running_variance"]
    loaded = enc.backbone.state_dict()
    assert torch.equal(loaded["layers.5.bn2.running_mean"], sd["layer3.1.bn2.running_mean"])
    assert torch.equal(loaded["layers.5.bn2.running_var"], torch.ones(256))  # left as built


def test_a_shape_mismatch_fails_even_when_not_strict(tmp_path: Path) -> None:
    sd, _ = _source("reference")
    sd = dict(sd, **{"layer1.0.conv1.weight": torch.zeros(64, 64, 5, 5)})
    path = _save(sd, tmp_path / "bad.pth", "state-dict")
    with pytest.raises(DataFormatError, match=r"layers\.0\.conv1\.weight \(file \[64, 64, 5, 5\]"):
        create_encoder("resnet18", (3, 40, 40), 16, weights=str(path), strict=False)


def test_files_that_hold_no_weights_fail_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"nowhere\.pth"):
        read_state_dict(tmp_path / "nowhere.pth")
    code = tmp_path / "code.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "fn": _Opaque()}, code)
    with pytest.raises(DataFormatError, match=r"code\.pth.*weights_only"):
        read_state_dict(code)  # a pickled object is refused, never run
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3, "lr": 0.1}, empty)
    with pytest.raises(DataFormatError, match=r"empty\.pt holds no state dict"):
        read_state_dict(empty)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(DataFormatError, match=r"junk\.safetensors"):
        read_state_dict(junk)


class _Opaque:
    pass


# ------------------------------------------------------------------------------- channels
@pytest.mark.parametrize("source", ["reference", "timm"])
def test_one_and_six_channel_inputs_adapt_the_first_convolution(
    tmp_path: Path, source: str
) -> None:
    """The exact identities: with summed kernels a 1-channel input x gives what the source gave
    for (x, x, x); with kernels tiled twice and halved a 6-channel input (x, x) gives what x
    gave."""
    sd, features = _source(source)
    path = _save(sd, tmp_path / "rgb.pth", "state-dict")
    grey = create_encoder("resnet18", (1, 40, 40), 16, weights=str(path)).eval()
    six = create_encoder("resnet18", (6, 40, 40), 16, weights=str(path)).eval()
    with torch.no_grad():
        _close(grey.backbone(X[:, :1]), features(X[:, :1].expand(-1, 3, -1, -1)))
        _close(six.backbone(torch.cat([X, X], 1)), features(X))


def test_two_channels_keep_the_first_two_kernels_rescaled() -> None:
    w = torch.randn(8, 3, 3, 3)
    torch.testing.assert_close(adapt_input_conv(w, 2), w[:, :2] * 1.5)
    torch.testing.assert_close(adapt_input_conv(w, 1), w.sum(1, keepdim=True))
    assert adapt_input_conv(w, 3) is w


# ------------------------------------------------------------------------------- timm, torchvision
def _stand_in_timm() -> types.SimpleNamespace:
    """The parts of timm's API the encoder uses, around the torchvision-layout reference."""

    def create_model(name: str, pretrained: bool, num_classes: int, in_chans: int) -> nn.Module:
        assert (name, pretrained) == ("resnet18", False)
        model = TorchvisionLayoutResNet18(num_classes, in_chans)
        model.pretrained_cfg = {"first_conv": "conv1", "classifier": "fc"}
        model.num_features = 512
        model.group_matcher = lambda coarse=False: {"stem": r"^conv1|bn1|maxpool"}
        return model

    return types.SimpleNamespace(create_model=create_model)


def _stand_in_torchvision() -> types.SimpleNamespace:
    def get_model(name: str, weights: object) -> nn.Module:
        assert (name, weights) == ("resnet18", None)
        return TorchvisionLayoutResNet18()

    return types.SimpleNamespace(models=types.SimpleNamespace(get_model=get_model))


@pytest.fixture(params=["stand-in", "real"])
def family(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``timm`` or ``torchvision`` (the test's parameter), real or stood in."""
    name = request.node.callspec.params["package"]
    if request.param == "real":
        _real(name)
    else:
        fake = _stand_in_timm() if name == "timm" else _stand_in_torchvision()
        monkeypatch.setitem(sys.modules, name, fake)
    return name


@pytest.mark.parametrize("package", ["timm", "torchvision"])
@pytest.mark.parametrize("fmt", ["state-dict", "safetensors", "unipair-layout"])
def test_family_encoders_load_weights(tmp_path: Path, family: str, package: str, fmt: str) -> None:
    sd, features = _source("reference")
    if fmt == "unipair-layout":
        sd = {k: v for k, v in rename_resnet18(sd, "unipair").items() if not k.startswith("fc.")}
    path = _save(sd, tmp_path / "w.pth", fmt.replace("unipair-layout", "state-dict"))
    enc = create_encoder(f"{family}:resnet18", (3, 40, 40), 16, weights=str(path)).eval()
    with torch.no_grad():
        _close(enc.backbone(X), features(X))
    info = enc.weights_info
    assert (info["sha256"], info["missing"], info["unexpected"]) == (_sha256(path), [], [])
    unipair = fmt == "unipair-layout"
    assert info["dropped"] == ([] if unipair else ["fc.bias", "fc.weight"])
    assert info["key_map"] == ("unipair->torchvision" if unipair else "none")


@pytest.mark.parametrize("package", ["timm", "torchvision"])
def test_family_encoders_adapt_channels_and_average_frames(
    tmp_path: Path, family: str, package: str
) -> None:
    sd, features = _source("reference")
    path = _save(sd, tmp_path / "w.pth", "state-dict")
    grey = create_encoder(f"{family}:resnet18", (1, 4, 40, 40), 16, weights=str(path)).eval()
    clip = X[:, :1].unsqueeze(2).repeat(1, 1, 4, 1, 1)  # [B, 1, T, H, W]
    clip = clip + torch.arange(4.0).view(1, 1, 4, 1, 1)  # frames differ
    with torch.no_grad():
        per_frame = [features(clip[:, :, t].expand(-1, 3, -1, -1)) for t in range(4)]
        want = grey.proj(torch.stack(per_frame).mean(0))
        _close(grey(clip), want)
    assert grey(clip).shape == (2, 16)


@pytest.mark.parametrize("package", ["timm", "torchvision"])
def test_family_encoders_name_their_stem(family: str, package: str) -> None:
    enc = create_encoder(f"{family}:resnet18", (3, 32, 32), 16)
    stem = {"timm": ("conv1", "bn1", "maxpool"), "torchvision": ("conv1", "bn1")}[package]
    assert enc.freeze_scopes()["stem"] == tuple(f"backbone.{s}" for s in stem)
    assert enc.weights_info is None


@pytest.mark.parametrize("package", ["timm", "torchvision"])
def test_family_encoders_pass_the_conformance_kit(family: str, package: str) -> None:
    for check in yield_encoder_checks(f"{family}:resnet18"):
        check(f"{family}:resnet18")


@pytest.mark.parametrize("package", ["timm", "torchvision"])
def test_a_missing_vision_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, package: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ImportError, match=r"unipair\[vision\]"):
        create_encoder(f"{package}:resnet18", (3, 32, 32), 16)


def test_family_names_resolve_and_unknown_ones_are_explained() -> None:
    assert "timm:resnet18" in ENCODERS and "hf:/some/dir" in ENCODERS
    assert "timm:" not in ENCODERS and "nope:x" not in ENCODERS
    assert ENCODERS.get("timm:resnet18").example_input_shape == (3, 32, 32)
    assert ENCODERS.get("hf:/x").reads_steps is True
    with pytest.raises(UnknownNameError, match=r"Families: hf:<\.\.\.>, timm:<\.\.\.>"):
        ENCODERS.get("nope:x")
    with pytest.raises(UnknownNameError, match="name what follows 'timm:'"):
        ENCODERS.get("timm:")
    assert ENCODERS.families() == ["hf", "timm", "torchvision"]
    assert ":" not in "".join(ENCODERS.names())  # the kit's list stays exact names


def test_importing_the_models_loads_no_optional_package() -> None:
    code = (
        "import sys, unipair.models as m\n"
        "m.create_encoder('resnet18', (3, 32, 32), 8)\n"
        "print(sorted({'timm', 'torchvision', 'transformers', 'safetensors', 'open_clip'}"
        " & set(sys.modules)))"
    )
    # the caller's environment (its packages may come from PYTHONPATH), this tree first
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- freezing
def test_freeze_spec_parses_and_prints_every_form() -> None:
    for text in ("none", "all", "stem", "until_epoch:0", "until_epoch:12"):
        assert str(FreezeSpec.parse(text)) == text
    assert FreezeSpec.parse(None) == FreezeSpec()
    for bad in ("some", "until_epoch", "until_epoch:", "until_epoch:-1", "until_epoch:x", True, 3):
        with pytest.raises(ConfigError, match="until_epoch:N"):
            FreezeSpec.parse(bad)
    spec = FreezeSpec.parse("until_epoch:2")
    assert [spec.part(e) for e in range(4)] == ["all", "all", None, None]
    assert FreezeSpec.parse("stem").part(100) == "stem"


def _bn_train_flags(module: nn.Module) -> set[bool]:
    return {m.training for m in module.modules() if isinstance(m, nn.BatchNorm2d)}


def test_freeze_all_stops_gradients_and_batchnorm_statistics() -> None:
    torch.manual_seed(0)
    enc = create_encoder("resnet18", (3, 32, 32), 16, freeze="all")
    assert enc.freeze.apply(enc, epoch=0) == ("backbone",)
    enc.train()  # what the trainer does every epoch: the frozen part stays in eval mode
    assert _bn_train_flags(enc.backbone) == {False} and enc.proj.training
    before = {k: v.clone() for k, v in enc.backbone.state_dict().items()}
    enc(torch.randn(4, 3, 32, 32)).sum().backward()
    for k, v in enc.backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed in a training-mode forward"
    assert all(p.grad is None and not p.requires_grad for p in enc.backbone.parameters())
    assert enc.proj.weight.grad is not None


def test_freeze_stem_freezes_only_the_stem() -> None:
    enc = create_encoder("resnet18", (3, 32, 32), 16, freeze="stem")
    enc.freeze.apply(enc, epoch=5)
    enc.train()
    frozen = {n for n, p in enc.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.stem.0.weight", "backbone.stem.1.weight", "backbone.stem.1.bias"}
    assert not enc.backbone.stem[1].training and _bn_train_flags(enc.backbone.layers) == {True}


def test_until_epoch_unfreezes_the_backbone_at_epoch_n() -> None:
    enc = create_encoder("resnet18", (3, 32, 32), 16, freeze="until_epoch:2")
    for epoch, frozen in ((0, True), (1, True), (2, False), (3, False)):
        enc.train()
        enc.freeze.apply(enc, epoch)
        assert {p.requires_grad for p in enc.backbone.parameters()} == {not frozen}
        assert _bn_train_flags(enc.backbone) == {not frozen}
    enc.eval()
    assert _bn_train_flags(enc.backbone) == {False}


def test_freezing_needs_an_encoder_that_names_its_parts() -> None:
    mlp = create_encoder("mlp", (20,), 8)
    FreezeSpec.parse("none").apply(mlp, 0)  # nothing to freeze: fine
    with pytest.raises(ConfigError, match="MLPEncoder cannot be frozen"):
        FreezeSpec.parse("all").apply(mlp, 0)


# ------------------------------------------------------------------------------- text
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["red", "green", "blue", "cat", "dog", "bird", "on", "a", "mat", "the", "river"]


def _captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    pytest.importorskip("tokenizers", reason="the `text` extra (tokenizers) is absent")
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        _captions(300, 0),
        trainers.WordPieceTrainer(vocab_size=80, special_tokens=SPECIALS, show_progress=False),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok


def _tiny_bert(vocab: int, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


@pytest.fixture(scope="module")
def bert_dir(tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BERT directory as users have them: model and tokenizer side by side."""
    pytest.importorskip("transformers", reason="the `text` extra (transformers) is absent")
    from transformers import PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("bert") / "tiny-bert"
    _tiny_bert(tokenizer.get_vocab_size()).save_pretrained(str(out))
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    ).save_pretrained(str(out))
    return out


def _ids(tokenizer, texts: list[str], length: int) -> tuple[Tensor, Tensor]:
    """Token ids padded with [PAD] (0) to ``length``, and the validity mask."""
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    valid = torch.zeros(len(texts), length, dtype=torch.bool)
    for i, text in enumerate(texts):
        row = tokenizer.encode(text).ids[:length]
        ids[i, : len(row)] = torch.tensor(row)
        valid[i, : len(row)] = True
    return ids, valid


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_hf_encoder_gives_the_saved_model_s_pooled_output(
    bert_dir: Path, tokenizer, pool: str
) -> None:
    ref = _tiny_bert(tokenizer.get_vocab_size())
    enc = create_encoder(f"hf:{bert_dir}", (16,), 32, pool=pool).eval()  # width 32: no projection
    ids, valid = _ids(tokenizer, _captions(4, 1), 16)
    with torch.no_grad():
        h = ref(input_ids=ids, attention_mask=valid.long()).last_hidden_state
        keep = valid.unsqueeze(-1).float()
        want = h[:, 0] if pool == "cls" else (h * keep).sum(1) / keep.sum(1)
        _close(enc(ids.float(), valid), want)  # ids arrive as float32 from in-memory data


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_hf_padding_changes_nothing(bert_dir: Path, tokenizer, pool: str) -> None:
    enc = create_encoder(f"hf:{bert_dir}", (24,), 16, pool=pool).eval()
    ids, valid = _ids(tokenizer, _captions(5, 2), 24)
    junk = torch.randint(0, tokenizer.get_vocab_size(), ids.shape)
    longest = int(valid.sum(1).max())
    with torch.no_grad():
        a = enc(ids, valid)
        b = enc(torch.where(valid, ids, junk), valid)
        c = enc(ids[:, :longest], valid[:, :longest])
        alone = torch.cat([enc(ids[i : i + 1, : int(n)], None) for i, n in enumerate(valid.sum(1))])
    for other in (b, c, alone):
        torch.testing.assert_close(other, a, rtol=1e-5, atol=1e-5)


def test_hf_encoder_passes_the_conformance_kit(bert_dir: Path) -> None:
    name = f"hf:{bert_dir}"
    checks = list(yield_encoder_checks(name))
    assert len(checks) == 3  # reads_steps: the padding check runs too
    for check in checks:
        check(name)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_hf_frozen_features_are_what_forward_projects(bert_dir: Path, tokenizer, pool: str) -> None:
    enc = create_encoder(f"hf:{bert_dir}", (12,), 8, pool=pool).eval()
    ids, valid = _ids(tokenizer, ["a red cat", "the blue dog sat down"], 12)
    with torch.no_grad():
        z = enc.frozen_features(ids, valid)
        assert torch.equal(enc(ids, valid), enc.proj(z))
        enc.reads_features = True  # the feature cache's mode: the input is z, no mask needed
        assert torch.equal(enc(z), enc.proj(z))


def test_hf_weights_info_hashes_config_and_weights(bert_dir: Path) -> None:
    info = create_encoder(f"hf:{bert_dir}", (8,), 16).weights_info
    assert set(info["files"]) == {"config.json", "model.safetensors"}  # not the tokenizer
    for name, f in info["files"].items():
        assert f == {"sha256": _sha256(bert_dir / name), "size": (bert_dir / name).stat().st_size}
    lines = "".join(f"{n} {f['sha256']} {f['size']}\n" for n, f in sorted(info["files"].items()))
    assert info["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert info["size"] == sum(f["size"] for f in info["files"].values())
    assert info["dropped"] == ["pooler.dense.bias", "pooler.dense.weight"]
    assert (info["missing"], info["unexpected"]) == ([], [])


def _copy_with(bert_dir: Path, out: Path, edit) -> Path:
    """A copy of the model directory whose weights went through ``edit``."""
    from safetensors.torch import load_file, save_file

    out.mkdir()
    (out / "config.json").write_text((bert_dir / "config.json").read_text())
    sd = load_file(str(bert_dir / "model.safetensors"))
    edit(sd)
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_hf_strict_loading(bert_dir: Path, tmp_path: Path) -> None:
    key = "encoder.layer.1.output.dense.weight"
    renamed = _copy_with(
        bert_dir, tmp_path / "renamed", lambda sd: sd.update({key + "_v2": sd.pop(key)})
    )
    with pytest.raises(DataFormatError) as e:
        create_encoder(f"hf:{renamed}", (8,), 16)
    assert str(renamed) in str(e.value) and key in str(e.value) and key + "_v2" in str(e.value)
    info = create_encoder(f"hf:{renamed}", (8,), 16, strict=False).weights_info
    assert (info["missing"], info["unexpected"]) == ([key], [key + "_v2"])
    resized = _copy_with(
        bert_dir, tmp_path / "resized", lambda sd: sd.update({key: sd[key][:, :60].contiguous()})
    )
    with pytest.raises(DataFormatError, match="resized"):
        create_encoder(f"hf:{resized}", (8,), 16, strict=False)


def test_hf_task_checkpoints_drop_their_heads(tokenizer, tmp_path: Path) -> None:
    """A masked-LM checkpoint (what bert-base-uncased is) loads strictly: ``cls.*`` is its
    head, and it has no pooler to miss."""
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(_tiny_bert(tokenizer.get_vocab_size()).config).save_pretrained(tmp_path)
    info = create_encoder(f"hf:{tmp_path}", (8,), 16).weights_info
    assert info["dropped"] and all(k.startswith("cls.") for k in info["dropped"])
    assert (info["missing"], info["unexpected"]) == ([], [])


def test_hf_loads_local_files_only_with_the_hub_offline(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub
    import transformers

    seen: list[tuple[bool, dict]] = []
    original = transformers.AutoModel.from_pretrained

    def spy(path: str, **kwargs: object) -> object:
        seen.append((hub.is_offline_mode(), kwargs))
        return original(path, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", spy)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    create_encoder(f"hf:{bert_dir}", (8,), 16)
    ((offline, kwargs),) = seen
    assert offline and kwargs["local_files_only"] is True and kwargs["trust_remote_code"] is False
    assert not hub.is_offline_mode()


def test_hf_errors_name_the_directory(bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="nowhere"):
        create_encoder(f"hf:{tmp_path / 'nowhere'}", (8,), 16)
    with pytest.raises(DataFormatError, match=r"no config\.json"):
        create_encoder(f"hf:{tmp_path}", (8,), 16)
    (tmp_path / "config.json").write_text((bert_dir / "config.json").read_text())
    with pytest.raises(DataFormatError, match="no weights file"):
        create_encoder(f"hf:{tmp_path}", (8,), 16)
    with pytest.raises(ConfigError, match="pool must be"):
        create_encoder(f"hf:{bert_dir}", (8,), 16, pool="max")
    with pytest.raises(ConfigError, match="needs \\[L\\] token ids"):
        create_encoder(f"hf:{bert_dir}", (8, 4), 16)


def test_hf_stem_is_the_embeddings(bert_dir: Path) -> None:
    enc = create_encoder(f"hf:{bert_dir}", (8,), 16, freeze="stem")
    enc.freeze.apply(enc, 0)
    frozen = {n.split(".")[1] for n, p in enc.named_parameters() if not p.requires_grad}
    assert frozen == {"embeddings"}


def _text_image_data(tokenizer, n: int = 48):
    from unipair.data.assemble import assemble

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    colour = np.where(labels == 0, "red", "blue")
    texts = [f"a {c} {t}" for c, t in zip(colour, _captions(n, 3), strict=True)]
    ids, valid = _ids(tokenizer, texts, 12)
    image = rng.normal(size=(n, 3, 24, 24)).astype(np.float32) + labels[:, None, None, None]
    return assemble(
        "text-image",
        {"image": image, "text": ids.numpy()},
        labels,
        valid={"text": valid.numpy()},
        standardize=False,
    )


def test_text_and_image_train_end_to_end(
    bert_dir: Path, tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unipair
    from unipair.data.registry import DATASETS, DatasetEntry

    entry = DatasetEntry(lambda: _text_image_data(tokenizer), "tiny text + image")
    monkeypatch.setitem(DATASETS._entries, "text-image-test", entry)
    sd, _ = _source("reference")
    weights = _save(sd, tmp_path / "resnet18.pth", "state-dict")
    result = unipair.train(
        {
            "dataset": "text-image-test",
            "method": "joint",
            "model": {
                "width": 16,
                "encoders": {
                    "image": {"name": "resnet18", "options": {"weights": str(weights)}},
                    "text": {"name": f"hf:{bert_dir}", "options": {"pool": "mean"}},
                },
            },
            "train": {"epochs": 2, "batch_size": 16, "seed": 0, "drop_last": True},
            "optim": {"lr": 1e-3},
            "logging": {"progress": "none"},
            "fabric": {"accelerator": "cpu"},
            "out": str(tmp_path / "runs"),
        }
    )
    assert math.isfinite(result.test["acc"]) and len(result.history) == 2
    trained = torch.load(result.run_dir / "last.ckpt", weights_only=True)["method"]
    start = _tiny_bert(tokenizer.get_vocab_size()).state_dict()
    key = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(trained[f"model.encoders.text.model.{key}"], start[key])
    image = trained["model.encoders.image.backbone.stem.0.weight"]
    assert not torch.equal(image, sd["conv1.weight"])  # trained from the loaded weights


def test_a_frozen_text_model_trains_the_same_on_cached_features(
    bert_dir: Path, tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Padded token ids with masks in, one pooled vector per row cached: same epochs."""
    import unipair
    from unipair.data.registry import DATASETS, DatasetEntry

    entry = DatasetEntry(lambda: _text_image_data(tokenizer), "tiny text + image")
    monkeypatch.setitem(DATASETS._entries, "text-image-test", entry)
    text = {"name": f"hf:{bert_dir}", "options": {"pool": "mean", "freeze": "all"}}
    image = {"name": "cnn", "options": {"channels": [8], "dropout": 0.0}}
    runs = {}
    for cache in ("off", "auto"):
        runs[cache] = unipair.train(
            {
                "dataset": "text-image-test",
                "method": "mla",
                "model": {"width": 16, "encoders": {"image": image, "text": text}},
                "train": {"epochs": 2, "batch_size": 16, "feature_cache": cache},
                "logging": {"progress": "none"},
                "fabric": {"accelerator": "cpu"},
                "out": str(tmp_path / "runs"),
                "name": cache,
            }
        )
    assert runs["auto"].summary["feature_cache"]["text"]["cached"]
    for a, b in zip(runs["off"].history, runs["auto"].history, strict=True):
        for key in [k for k in a if k.startswith(("train/", "val/"))]:
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


# ------------------------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def silero(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """silero-vad's 16 kHz weights (MIT), read out of its wheel, which `make` fetches into
    ``.venv/wheels`` with ``pip download``; nothing is downloaded here."""
    if not SILERO_WHEEL.is_file():
        pytest.skip(f"{SILERO_WHEEL} is absent (fetched by `make` in the dev install step)")
    out = tmp_path_factory.mktemp("silero") / "silero_vad_16k.safetensors"
    with zipfile.ZipFile(SILERO_WHEEL) as z:
        out.write_bytes(z.read("silero_vad/data/silero_vad_16k.safetensors"))
    return out


class _SileroVAD(nn.Module):
    """A module with silero-vad 16k's parameter names and shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, 256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def spectrum(self, audio: Tensor) -> Tensor:
        """Magnitudes of the 129 frequency bins of each 256-sample frame."""
        y = self.stft_conv(audio.unsqueeze(1))
        return (y[:, :129] ** 2 + y[:, 129:] ** 2).sqrt()


def test_real_pretrained_file_loads_with_its_hash(silero: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = _SileroVAD()
    info = load_weights(model, silero)
    assert (info["sha256"], info["size"]) == (_sha256(silero), silero.stat().st_size)
    assert (info["missing"], info["unexpected"], info["dropped"]) == ([], [], [])
    for k, v in load_file(str(silero)).items():
        assert torch.equal(model.state_dict()[k], v), k
    sd = load_file(str(silero))
    sd["lstm.weight_ih"] = sd.pop("lstm_cell.weight_ih")
    save_file(sd, str(tmp_path / "renamed.safetensors"))
    with pytest.raises(DataFormatError, match=r"missing keys: lstm_cell\.weight_ih"):
        load_weights(_SileroVAD(), tmp_path / "renamed.safetensors")


def test_real_pretrained_stft_weights_are_a_hann_windowed_dft(silero: Path) -> None:
    """Loaded as an audio feature extractor, silero's first layer is a 256-point DFT with a
    Hann window: a tone at bin k peaks at bin k with N/4 = 64 and N/8 = 32 beside it."""
    model = _SileroVAD()
    load_weights(model, silero)
    n = torch.arange(256.0)
    with torch.no_grad():
        for k in (5, 17, 40, 100):
            mag = model.spectrum(torch.cos(2 * math.pi * k * n / 256).view(1, 256))[0, :, 0]
            assert int(mag.argmax()) == k
            torch.testing.assert_close(
                mag[k - 1 : k + 2], torch.tensor([32.0, 64.0, 32.0]), atol=1e-3, rtol=0
            )


def test_the_docs_examples_build_their_encoders(tmp_path: Path, bert_dir: Path) -> None:
    """docs/encoders.md's CREMA-D and Food-101 configs validate, and every encoder they name
    loads the local files they point at (here: a ResNet-18 file and the tiny BERT directory)."""
    import yaml

    from unipair.engine.config import RunConfig
    from unipair.models.pretrained import FreezeSpec

    doc = (Path(__file__).resolve().parents[1] / "docs" / "encoders.md").read_text()
    blocks = re.findall(r"## Example: [^\n]*\n+```yaml\n(.*?)```", doc, flags=re.DOTALL)
    assert len(blocks) == 2
    resnet = _save(_source("reference")[0], tmp_path / "resnet18-f37072fd.pth", "pt")
    shapes = {"video": (3, 3, 64, 64), "audio": (1, 64, 32), "image": (3, 64, 64), "text": (16,)}
    for block in blocks:
        text = block.replace("/models/resnet18-f37072fd.pth", str(resnet))
        cfg = RunConfig.from_mapping(
            yaml.safe_load(text.replace("/models/bert-base-uncased", str(bert_dir)))
        )
        for modality, spec in cfg.model.encoders.items():
            options = dict(spec.options)
            enc = create_encoder(spec.name, shapes[modality], cfg.model.width, **options)
            assert enc.out_dim == cfg.model.width
            if "freeze" in options:
                FreezeSpec.parse(options["freeze"])
