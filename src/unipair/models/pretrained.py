"""Encoders on weights read from local files: explicit, checked, traceable. Nothing downloads.

``weights: PATH`` is a plain state dict (``.pt``/``.pth``, read with ``weights_only=True``, so a
file cannot run code), a ``.safetensors`` file, or a training checkpoint that holds the state
dict under ``state_dict`` (timm) or ``model`` (torchvision's reference scripts); a ``module.``
prefix left by DistributedDataParallel is removed. ResNet-18 keys are renamed by one explicit
table between torchvision's layout (``conv1``, ``bn1``, ``layerK.J``, ``downsample``; timm's
ResNets use the same names) and unipair's own (``stem.0``, ``stem.1``, ``layers.N``,
``shortcut``). The checkpoint's classifier head (``fc.*`` for ResNets) is dropped by name and
listed; any other key that the model lacks, or that the file lacks, fails the load with the
keys listed unless ``strict: false``, and a shape mismatch always fails. An input with another
number of channels than the checkpoint adapts the first convolution as timm's
``adapt_input_conv`` does (:func:`adapt_input_conv`).

Every encoder built on a file keeps ``weights_info``: the file's path, ``sha256`` and ``size``
(hashed once, streamed, while loading) and the keys ``missing``, ``unexpected`` (both empty
unless ``strict: false``) and ``dropped``. A run that records it can refuse to resume or be
reused with other weights.

Families registered here: ``timm:<arch>`` and ``torchvision:<arch>`` (images, spectrograms and
clips, like ``resnet18``; their packages are the ``vision`` extra, imported when the encoder
is built). ``freeze`` on any of them (and on ``resnet18`` and ``hf:<dir>``) is a
:class:`FreezeSpec`, applied per epoch by the trainer.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from unipair.errors import ConfigError, DataFormatError, DataNotFoundError
from unipair.models.encoders import ENCODERS, Encoder, per_frame

__all__ = [
    "RESNET18_KEY_TABLE",
    "BackboneEncoder",
    "FreezeSpec",
    "TimmEncoder",
    "TorchvisionEncoder",
    "adapt_input_conv",
    "file_digest",
    "freezable",
    "frozen_state",
    "hold_frozen",
    "load_weights",
    "read_state_dict",
    "rename_resnet18",
    "weights_digest",
]

_VISION = "pip install 'unipair[vision]'"
_LISTED = 20  # keys shown per list in an error message


# ------------------------------------------------------------------------------- reading files
def file_digest(path: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of a file, read in chunks (no second copy in memory)."""
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def weights_digest(path: str | Path) -> tuple[str, int]:
    """SHA-256 and size of what an encoder's ``weights_info`` hashed at ``path``: a weights file,
    or a Hugging Face model directory as ``hf:<dir>`` hashes it (config and weights files)."""
    path = Path(path)
    if path.is_dir():
        from unipair.models.hf import hf_weights_info

        info = hf_weights_info(path)
        return info["sha256"], info["size"]
    if not path.is_file():
        raise DataNotFoundError(f"weights file {path} does not exist")
    return file_digest(path)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors by name from a ``.safetensors`` file or a ``torch.save`` file (a state dict, or a
    checkpoint holding one under ``state_dict`` or ``model``), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(f"reading {path} needs `safetensors`: pip install safetensors") from e
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError for a bad file
            raise DataFormatError(f"cannot read safetensors file {path}: {e}") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling and zip errors: whatever a file that is no weights raises
        raise DataFormatError(
            f"cannot read weights file {path} with torch.load(weights_only=True): {e}; save a "
            "state dict (model.state_dict()) or a .safetensors file"
        ) from e
    return _state_dict_in(obj, path)


def _state_dict_in(obj: Any, path: Path) -> dict[str, Tensor]:
    """The state dict inside what ``torch.load`` returned."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not (isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values())):
        found = f"keys {sorted(map(str, obj))[:10]}" if isinstance(obj, Mapping) else type(obj)
        raise DataFormatError(
            f"{path} holds no state dict (names to tensors), neither at the top nor under "
            f"'state_dict' or 'model'; found {found}"
        )
    sd = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


# ------------------------------------------------------------------------------- key layouts
#: (torchvision/timm prefix, unipair prefix) of every ResNet-18 parameter and buffer outside
#: the classifier; the downsampling entries come first so that they win over their block's.
RESNET18_KEY_TABLE: tuple[tuple[str, str], ...] = (
    ("conv1.", "stem.0."),
    ("bn1.", "stem.1."),
    *((f"layer{s}.0.downsample.", f"layers.{2 * s - 2}.shortcut.") for s in (2, 3, 4)),
    *((f"layer{s}.{b}.", f"layers.{2 * s - 2 + b}.") for s in (1, 2, 3, 4) for b in (0, 1)),
)
_RESNET18_MARKERS = {"torchvision": "conv1.weight", "unipair": "stem.0.weight"}


def rename_resnet18(sd: Mapping[str, Tensor], to: Literal["unipair", "torchvision"]) -> dict:
    """A ResNet-18 state dict in the other layout (:data:`RESNET18_KEY_TABLE`); keys the table
    does not cover (``fc.*``, foreign keys) keep their names, to be dropped or reported."""
    pairs = RESNET18_KEY_TABLE if to == "unipair" else [(u, t) for t, u in RESNET18_KEY_TABLE]
    out = {}
    for key, value in sd.items():
        for old, new in pairs:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def adapt_input_conv(weight: Tensor, channels: int) -> Tensor:
    """First-convolution kernels for ``channels`` inputs from a checkpoint's (timm's rule).

    One channel: the sum of the kernels, so a grey input x gives what the checkpoint gave for
    the RGB input (x, x, x). C other channels: the kernels tiled to C and scaled by base/C (3/C
    for RGB), so for C = 6 the input (x, x) gives what x gave; for C = 2 (or any C that is no
    multiple of 3) it only keeps the activations' scale, a starting point to be trained.
    """
    base = weight.shape[1]
    if channels == base:
        return weight
    w = weight.float()
    if channels == 1:
        w = w.sum(1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(channels / base), 1, 1)[:, :channels] * (base / channels)
    return w.to(weight.dtype)


def _under(name: str, prefixes: Iterable[str]) -> bool:
    """``name`` is one of ``prefixes`` or inside one of them (dotted names)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _listing(keys: Sequence[str]) -> str:
    more = f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return ", ".join(keys[:_LISTED]) + more


def load_weights(
    module: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    heads: Sequence[str] = (),
    input_conv: str | None = None,
    resnet18_layout: Literal["unipair", "torchvision"] | None = None,
) -> dict[str, Any]:
    """Load a weights file into ``module``; return its ``weights_info``.

    ``heads``: names of the checkpoint's classifier (its keys are dropped and listed under
    ``dropped``). ``input_conv``: the first convolution, adapted by :func:`adapt_input_conv`
    when the module has another number of input channels. ``resnet18_layout``: the module's
    ResNet-18 layout; a file in the other one is renamed (``key_map`` in the result). Missing
    ``num_batches_tracked`` counters (old torchvision files) are not weights and not reported.
    """
    path = Path(path).expanduser()
    sd = read_state_dict(path)
    sha256, size = file_digest(path)
    key_map = "none"
    if resnet18_layout is not None:
        source = next((k for k, v in _RESNET18_MARKERS.items() if v in sd), resnet18_layout)
        if source != resnet18_layout:
            sd = rename_resnet18(sd, resnet18_layout)
            key_map = f"{source}->{resnet18_layout}"
    dropped = sorted(k for k in sd if _under(k, heads))
    target = module.state_dict()
    weight = f"{input_conv}.weight"
    if input_conv is not None and weight in sd and weight in target:
        have, want = sd[weight].shape, target[weight].shape
        if len(have) == 4 and have[0] == want[0] and have[2:] == want[2:]:
            sd[weight] = adapt_input_conv(sd[weight], want[1])
    kept = {k: v for k, v in sd.items() if k not in dropped}
    mismatched = [
        f"{k} (file {list(v.shape)}, model {list(target[k].shape)})"
        for k, v in kept.items()
        if k in target and v.shape != target[k].shape
    ]
    if mismatched:
        raise DataFormatError(
            f"weights {path}: shapes differ from the model: {_listing(mismatched)}"
        )
    missing = sorted(k for k in target if k not in kept and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in kept if k not in target)
    if strict and (missing or unexpected):
        parts = [f"missing keys: {_listing(missing)}"] if missing else []
        parts += [f"unexpected keys: {_listing(unexpected)}"] if unexpected else []
        raise DataFormatError(
            f"weights {path} do not match {type(module).__name__} (key map {key_map}): "
            f"{'; '.join(parts)}. Set strict: false to load the matching keys; what was not "
            "loaded is listed in the encoder's weights_info"
        )
    module.load_state_dict({k: v for k, v in kept.items() if k in target}, strict=False)
    return {
        "path": str(path.resolve()),
        "sha256": sha256,
        "size": size,
        "key_map": key_map,
        "missing": missing,
        "unexpected": unexpected,
        "dropped": dropped,
    }


# ------------------------------------------------------------------------------- freezing
@dataclass(frozen=True)
class FreezeSpec:
    """The ``freeze`` option: which part of an encoder does not train, epoch by epoch.

    ``none``; ``all``: the pretrained backbone, every epoch (a linear probe of its features);
    ``stem``: its first layers (``freeze_scopes()`` of each encoder says which), every epoch;
    ``until_epoch:N``: the whole backbone during epochs 0..N-1, trained from epoch N on (epochs
    count from 0, as the trainer's do). The projection to the model width always trains.
    """

    mode: Literal["none", "all", "stem", "until_epoch"] = "none"
    until: int = 0

    @classmethod
    def parse(cls, value: str | FreezeSpec | None) -> FreezeSpec:
        if isinstance(value, FreezeSpec):
            return value
        if value is None or value in ("none", "all", "stem"):
            return cls(value or "none")
        head, colon, n = value.partition(":") if isinstance(value, str) else ("", "", "")
        if head == "until_epoch" and colon and n.isdigit():
            return cls("until_epoch", int(n))
        raise ConfigError(
            f"freeze: {value!r}; expected none, all, stem or until_epoch:N (N epochs, N >= 0)"
        )

    def __str__(self) -> str:
        return f"until_epoch:{self.until}" if self.mode == "until_epoch" else self.mode

    def part(self, epoch: int) -> str | None:
        """The frozen part at ``epoch``: ``all``, ``stem`` or None."""
        if self.mode == "until_epoch":
            return "all" if epoch < self.until else None
        return None if self.mode == "none" else self.mode

    def trains_in(self, epochs: int) -> int | None:
        """The first of epochs 0..epochs-1 in which some of the backbone trains (None: it is
        frozen throughout, so its outputs can be computed once)."""
        return next((e for e in range(epochs) if self.part(e) != "all"), None)

    def apply(self, encoder: nn.Module, epoch: int) -> tuple[str, ...]:
        """Freeze the part for ``epoch`` and unfreeze the rest; return the frozen names.

        Frozen parameters get ``requires_grad=False``; frozen submodules go to eval mode, so
        BatchNorm keeps its running statistics and dropout is off. The encoder records the
        names in ``encoder.frozen`` and keeps them in eval mode through later ``train()``
        calls (see :func:`hold_frozen`).
        """
        part = self.part(epoch)
        names: tuple[str, ...] = ()
        if part is not None:
            scopes = getattr(encoder, "freeze_scopes", None)
            if scopes is None:
                raise ConfigError(f"freeze: {self}: {type(encoder).__name__} cannot be frozen")
            names = tuple(scopes()[part])
        for name, p in encoder.named_parameters():
            p.requires_grad_(not _under(name, names))
        encoder.frozen = names
        encoder.train(encoder.training)  # back to train mode what is no longer frozen
        hold_frozen(encoder)
        return names


def freezable(module: nn.Module) -> dict[str, nn.Module]:
    """The submodules of ``module`` (by dotted name) that carry a :class:`FreezeSpec` in
    ``freeze``: what the trainer freezes and unfreezes at the start of every epoch."""
    modules = module.named_modules()
    return {n: m for n, m in modules if isinstance(getattr(m, "freeze", None), FreezeSpec)}


def frozen_state(encoder: nn.Module) -> dict[str, Tensor]:
    """The entries of ``encoder``'s state that ``freeze: all`` freezes (weights and BatchNorm
    statistics): all that its ``frozen_features`` depend on."""
    names = encoder.freeze_scopes()["all"]  # type: ignore[operator]
    return {k: v for k, v in encoder.state_dict().items() if _under(k, names)}


def hold_frozen(encoder: nn.Module) -> None:
    """Put the encoder's frozen submodules (``encoder.frozen``) in eval mode; encoders that
    take ``freeze`` call it from ``train()``, so the trainer's ``model.train()`` keeps them."""
    frozen = getattr(encoder, "frozen", ())
    for name, m in encoder.named_modules():
        if name and _under(name, frozen):
            m.eval()


# ------------------------------------------------------------------------------- encoders
class BackboneEncoder(Encoder):
    """A 2-d backbone ([N, C, H, W] -> [N, D]) as an encoder of images [C, H, W] and clips
    [C, T, H, W] (frame by frame, averaged over time, as ``resnet18``), projected to ``width``.

    Subclasses build ``backbone`` and name its ``stem`` (module or parameter names inside it).
    """

    example_input_shape: ClassVar[tuple[int, ...]] = (3, 32, 32)

    def _setup(
        self,
        backbone: nn.Module,
        features: int,
        width: int,
        stem: Sequence[str],
        freeze: str | None,
        channels_last: bool,
        weights_info: dict[str, Any] | None,
    ) -> None:
        self.backbone = backbone
        self.proj: nn.Module = nn.Identity() if width == features else nn.Linear(features, width)
        self.stem = tuple(f"backbone.{s}" for s in stem)
        self.freeze = FreezeSpec.parse(freeze)
        self.frozen: tuple[str, ...] = ()
        self.weights_info = weights_info
        self.channels_last = channels_last
        if channels_last:  # as resnet18: oneDNN's faster kernels, also for 1-channel inputs
            self.backbone.to(memory_format=torch.channels_last)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x if self.reads_features else self.frozen_features(x))

    def frozen_features(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """The backbone's features (a clip's averaged over its frames), before projection."""
        return per_frame(self.backbone, x, self.channels_last)

    def freeze_scopes(self) -> dict[str, tuple[str, ...]]:
        return {"all": ("backbone",), "stem": self.stem}

    def train(self, mode: bool = True) -> BackboneEncoder:
        super().train(mode)
        hold_frozen(self)
        return self


def _check_image_shape(family: str, input_shape: Sequence[int]) -> None:
    if len(input_shape) not in (3, 4):
        raise ConfigError(
            f"{family} encoders need [C, H, W] or [C, T, H, W] inputs, got {list(input_shape)}"
        )


def _import_vision(package: str) -> ModuleType:
    """timm or torchvision; both need a torchvision built for this very torch."""
    try:
        return __import__(package)
    except (ImportError, RuntimeError) as e:  # RuntimeError: torchvision's ops do not load
        raise ImportError(
            f"{package}:<arch> encoders need {package} and a torchvision built for this torch "
            f"({torch.__version__}; torchvision's C++ operators must come from the same release "
            f"and CPU/CUDA build): {_VISION}. Importing {package} failed: {e}"
        ) from e


@ENCODERS.register_family("timm")
class TimmEncoder(BackboneEncoder):
    """``timm:<arch>``: ``timm.create_model(arch, num_classes=0, in_chans=C)``, never its
    download; ``weights`` is a file in timm's own key layout (what timm saves, or the
    ``model.safetensors`` of a timm model directory). For ResNet-18 a unipair-layout file is
    renamed too. ``stem``: the modules timm's ``group_matcher`` names stem (ResNets: conv1,
    bn1, maxpool; ViTs: patch_embed, cls_token, pos_embed)."""

    def __init__(
        self,
        arch: str,
        input_shape: Sequence[int],
        width: int,
        weights: str | None = None,
        strict: bool = True,
        freeze: str | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        _check_image_shape("timm", input_shape)
        timm = _import_vision("timm")
        try:
            model = timm.create_model(
                arch, pretrained=False, num_classes=0, in_chans=input_shape[0]
            )
        except RuntimeError as e:  # timm's "Unknown model"
            raise ConfigError(f"timm:{arch}: {e}") from None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        info = None
        if weights is not None:
            info = load_weights(
                model,
                weights,
                strict=strict,
                heads=_names(cfg.get("classifier")),
                input_conv=next(iter(_names(cfg.get("first_conv"))), None),
                resnet18_layout="torchvision" if arch == "resnet18" else None,
            )
        stem = _timm_stem(model) or _names(cfg.get("first_conv"))
        self._setup(model, model.num_features, width, stem, freeze, channels_last, info)


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """timm's cfg names one module (a string) or several (a tuple)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _timm_stem(model: nn.Module) -> tuple[str, ...]:
    """Top-level modules and parameters that match timm's own stem pattern."""
    try:
        pattern = model.group_matcher(coarse=True).get("stem")
    except (AttributeError, NotImplementedError):
        return ()
    if not isinstance(pattern, str):
        return ()
    top = [n for n, _ in model.named_children()]
    top += [n for n, _ in model.named_parameters(recurse=False)]
    return tuple(n for n in top if re.match(pattern, n))


@ENCODERS.register_family("torchvision")
class TorchvisionEncoder(BackboneEncoder):
    """``torchvision:<arch>``: ``torchvision.models.get_model(arch, weights=None)`` with its last
    Linear layer (the classifier: ``fc``, ``classifier.N``, ``heads.head``) replaced by the
    identity; ``weights`` is a torchvision file (``resnet18-f37072fd.pth``), or for ResNet-18
    also a unipair one. Another number of input channels replaces the first convolution.
    ``stem``: the first convolution and the normalisation right after it (ResNets: conv1, bn1).
    """

    def __init__(
        self,
        arch: str,
        input_shape: Sequence[int],
        width: int,
        weights: str | None = None,
        strict: bool = True,
        freeze: str | None = None,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        _check_image_shape("torchvision", input_shape)
        tv = _import_vision("torchvision")
        try:
            model = tv.models.get_model(arch, weights=None)
        except ValueError as e:  # unknown name
            raise ConfigError(f"torchvision:{arch}: {e}") from None
        modules = list(model.named_modules())
        linears = [(n, m) for n, m in modules if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(f"torchvision:{arch} has no Linear classifier to take features from")
        head, linear = linears[-1]
        model.set_submodule(head, nn.Identity())
        i, (conv_name, conv) = next(
            (i, nm) for i, nm in enumerate(modules) if isinstance(nm[1], nn.Conv2d)
        )
        if conv.in_channels != input_shape[0]:
            model.set_submodule(conv_name, _with_inputs(conv, input_shape[0]))
        stem = [conv_name]
        if i + 1 < len(modules) and isinstance(modules[i + 1][1], _NORMS):
            stem.append(modules[i + 1][0])
        info = None
        if weights is not None:
            info = load_weights(
                model,
                weights,
                strict=strict,
                heads=(head,),
                input_conv=conv_name,
                resnet18_layout="torchvision" if arch == "resnet18" else None,
            )
        self._setup(model, linear.in_features, width, stem, freeze, channels_last, info)


_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def _with_inputs(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """The same convolution for another number of input channels (freshly initialised)."""
    return nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
