"""Encoders: one per modality, each mapping a sample to a feature vector of a common width.

Registry in the style of timm: ``create_encoder(name, input_shape, width, **options)``, and
``default_encoder(shape)`` picks a sensible one from the input's shape alone. Besides exact
names the registry holds families named ``<family>:<argument>`` (``timm:resnet18``,
``hf:/models/bert``; :mod:`unipair.models.pretrained`, :mod:`unipair.models.hf`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from unipair.errors import ConfigError, UnknownNameError
from unipair.models.resnet import ResNet18
from unipair.registry import Registry

if TYPE_CHECKING:
    from unipair.models.pretrained import FreezeSpec

__all__ = [
    "ENCODERS",
    "CNNEncoder",
    "Encoder",
    "EncoderRegistry",
    "MLPEncoder",
    "ResNet18Encoder",
    "TransformerEncoder",
    "create_encoder",
    "default_encoder",
    "list_encoders",
    "per_frame",
]


class Encoder(nn.Module):
    """Maps [B, *input_shape] to [B, out_dim] (or [B, L, out_dim] when ``sequence_output``).

    ``example_input_shape`` is a small input the encoder accepts; the conformance kit
    (``unipair.testing``) builds every registered encoder with it. Encoders that read
    variable-length sequences set ``reads_steps`` and take ``forward(x, valid)`` with ``valid``
    bool [B, L] (True for real steps, None when nothing is padded).
    """

    out_dim: int
    sequence_output: bool = False
    reads_steps: ClassVar[bool] = False
    example_input_shape: ClassVar[tuple[int, ...]]
    #: Encoders on a pretrained backbone also define ``frozen_features(x, valid=None)``: the
    #: output of what ``freeze: all`` freezes (plus parameter-free pooling), which the rest of
    #: ``forward`` (the projection) reads. With ``reads_features`` set, ``forward`` takes those
    #: features as its input: how the engine trains on cached features of a frozen backbone
    #: (``train.feature_cache``) while the module, and so its checkpoint, stays whole.
    reads_features: bool = False


def compile_encoders(module: nn.Module) -> list[str]:
    """``torch.compile`` every :class:`Encoder` inside ``module`` in place (``nn.Module.compile``:
    parameters, state-dict keys and checkpoints stay as they are); the names compiled.

    Inductor fuses each encoder's normalisation and activation into its own kernels and keeps
    fewer activations for the backward pass. The outermost encoders are compiled, not the
    backbones inside them, so every encoder is one graph.
    """
    names: list[str] = []
    for name, child in module.named_modules():
        if isinstance(child, Encoder) and not any(name.startswith(f"{n}.") for n in names):
            child.compile()
            names.append(name)
    return names


class _FamilyMember:
    """A family's factory bound to the argument after the colon. Class attributes
    (``example_input_shape``, ``reads_steps``) read through to the factory, so the conformance
    kit checks ``timm:resnet18`` like any registered class."""

    def __init__(self, factory: Callable[..., Encoder], argument: str) -> None:
        self.factory = factory
        self.argument = argument

    def __call__(self, **options: Any) -> Encoder:
        return self.factory(self.argument, **options)

    def __getattr__(self, name: str) -> Any:
        # reached only for what the instance lacks; a copy under construction has no factory
        if name.startswith("__") or "factory" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.factory, name)


class EncoderRegistry(Registry[Callable[..., Encoder]]):
    """Exact names, plus families ``<family>:<argument>`` whose factory takes the argument
    first: an architecture (``timm:resnet18``) or a directory (``hf:/models/bert``) cannot be
    listed in advance. ``names()`` lists the exact names only; ``families()`` the prefixes."""

    def __init__(self) -> None:
        super().__init__("encoder")
        self._families: dict[str, Callable[..., Encoder]] = {}

    def register_family(self, family: str) -> Callable[[Callable[..., Encoder]], Any]:
        def decorator(factory: Callable[..., Encoder]) -> Callable[..., Encoder]:
            if family in self._families:
                raise ValueError(f"encoder family {family!r} is already registered")
            self._families[family] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Encoder]:
        family, colon, argument = name.partition(":")
        if colon and family in self._families:
            if not argument:
                raise UnknownNameError(f"encoder {name!r}: name what follows '{family}:'")
            return _FamilyMember(self._families[family], argument)
        return super().get(name)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            family, colon, argument = name.partition(":")
            if colon and argument and family in self._families:
                return True
        return super().__contains__(name)

    def unknown_message(self, name: str) -> str:
        families = ", ".join(f"{f}:<...>" for f in self.families())
        return f"{super().unknown_message(name)} Families: {families or '(none)'}."

    def families(self) -> list[str]:
        return sorted(self._families)


ENCODERS = EncoderRegistry()


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "gelu": nn.GELU()}[name]


@ENCODERS.register("mlp")
class MLPEncoder(Encoder):
    """For feature vectors (any shape is flattened): Linear-activation-dropout blocks."""

    example_input_shape = (20,)

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int,
        hidden: Sequence[int] = (256,),
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        dims = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b)]
            if layer_norm:
                layers += [nn.LayerNorm(b)]
            layers += [_activation(activation), nn.Dropout(dropout)]
        layers += [nn.Linear(dims[-1], width)]
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def per_frame(
    backbone: Callable[[Tensor], Tensor], x: Tensor, channels_last: bool = False
) -> Tensor:
    """``backbone`` on images [B, C, H, W], or on every frame of clips [B, C, T, H, W] with the
    features averaged over time (how the peers encode a few video frames)."""
    frames = x.dim() == 5
    if frames:  # [B, C, T, H, W] -> [B*T, C, H, W]
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    z = backbone(x)
    return z.reshape(b, t, -1).mean(1) if frames else z


@ENCODERS.register("cnn")
class CNNEncoder(Encoder):
    """A small CNN for images and spectrograms [C, H, W] and clips [C, T, H, W] (frame by
    frame, features averaged over time, as ``resnet18``): conv-BN-ReLU-pool blocks."""

    example_input_shape = (1, 16, 16)

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int,
        channels: Sequence[int] = (32, 64, 128),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(input_shape) not in (3, 4):
            raise ConfigError(
                f"cnn encoder needs [C, H, W] or [C, T, H, W] inputs, got {list(input_shape)}"
            )
        smallest = 2 ** len(channels)  # every block halves the image (max pooling)
        if min(input_shape[-2:]) < smallest:
            raise ConfigError(
                f"cnn encoder with {len(channels)} blocks needs images of at least "
                f"{smallest}x{smallest}, got {list(input_shape)}; give fewer channels "
                "(encoder option channels) or another encoder"
            )
        layers: list[nn.Module] = []
        cin = input_shape[0]
        for cout in channels:
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, width))
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(per_frame(self.features, x))


@ENCODERS.register("resnet18")
class ResNet18Encoder(Encoder):
    """ResNet-18 for images [C, H, W] and clips [C, T, H, W].

    A clip is encoded frame by frame and the frame features are averaged over time, as the
    audio-visual literature (OGM-GE, MLA) does for its visual stream. ``weights`` loads a
    torchvision, timm or unipair ResNet-18 file into the backbone (``strict``, ``freeze``,
    ``weights_info``: see :mod:`unipair.models.pretrained`); without it the backbone starts
    from random initialisation, as before.
    """

    example_input_shape = (3, 32, 32)

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int,
        channels_last: bool = True,
        weights: str | None = None,
        strict: bool = True,
        freeze: str | None = None,
    ) -> None:
        # imported here: pretrained.py imports this module
        from unipair.models.pretrained import FreezeSpec, load_weights

        super().__init__()
        if len(input_shape) not in (3, 4):
            raise ConfigError(
                f"resnet18 encoder needs [C, H, W] or [C, T, H, W] inputs, got {list(input_shape)}"
            )
        self.freeze: FreezeSpec = FreezeSpec.parse(freeze)
        self.frozen: tuple[str, ...] = ()
        self.backbone = ResNet18(in_channels=input_shape[0])
        self.weights_info: dict[str, Any] | None = None
        if weights is not None:
            self.weights_info = load_weights(
                self.backbone,
                weights,
                strict=strict,
                heads=("fc",),
                input_conv="stem.0",
                resnet18_layout="unipair",
            )
        self.proj: nn.Module = (
            nn.Identity() if width == ResNet18.out_dim else nn.Linear(ResNet18.out_dim, width)
        )
        self.channels_last = channels_last
        if channels_last:
            # Weights in channels-last too: for a 1-channel input (a spectrogram)
            # x.contiguous(channels_last) changes nothing and oneDNN would otherwise pick the
            # slower NCHW kernels for the whole network (1.2x on CREMA-D-sized audio).
            self.backbone.to(memory_format=torch.channels_last)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x if self.reads_features else self.frozen_features(x))

    def frozen_features(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """The backbone's pooled features [B, 512] (a clip's averaged over its frames)."""
        return per_frame(self.backbone, x, self.channels_last)

    def freeze_scopes(self) -> dict[str, tuple[str, ...]]:
        """What ``freeze`` names: ``all`` the backbone, ``stem`` its 7x7 convolution and
        BatchNorm (the projection to the model width always trains)."""
        return {"all": ("backbone",), "stem": ("backbone.stem",)}

    def train(self, mode: bool = True) -> ResNet18Encoder:
        from unipair.models.pretrained import hold_frozen

        super().train(mode)
        hold_frozen(self)
        return self


class _SequenceTransformer(nn.Module):
    """Learned positions, pre-norm transformer layers and masked mean pooling: a padded step
    never changes the output of a real one."""

    def __init__(
        self, length: int, width: int, layers: int, heads: int, ff_mult: int, dropout: float
    ) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, length, width))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, ff_mult * width, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, z: Tensor, valid: Tensor | None, pool: bool) -> Tensor:
        z = z + self.pos[:, : z.shape[1]]
        z = self.norm(self.encoder(z, src_key_padding_mask=None if valid is None else ~valid))
        if valid is None:
            return z.mean(1) if pool else z
        keep = valid.unsqueeze(-1).to(z.dtype)
        if not pool:
            return z * keep
        return (z * keep).sum(1) / keep.sum(1).clamp_min(1.0)


def _check_pool(pool: str) -> None:
    if pool not in ("mean", "none"):
        raise ConfigError(f"transformer pool must be 'mean' or 'none', got {pool!r}")


@ENCODERS.register("transformer")
class TransformerEncoder(Encoder):
    """For sequences [L, D]: linear embedding, learned positions, pre-norm transformer layers.

    ``pool="mean"`` returns [B, width] (the mean over real steps); ``pool="none"`` returns the
    sequence [B, L, width] (padded steps zero).
    """

    example_input_shape = (6, 8)
    reads_steps = True

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int,
        layers: int = 2,
        heads: int = 4,
        ff_mult: int = 2,
        dropout: float = 0.1,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ConfigError(f"transformer encoder needs [L, D] inputs, got {list(input_shape)}")
        _check_pool(pool)
        length, dim = input_shape
        self.embed = nn.Linear(dim, width)
        self.body = _SequenceTransformer(length, width, layers, heads, ff_mult, dropout)
        self.pool = pool
        self.sequence_output = pool == "none"
        self.out_dim = width

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.body(self.embed(x), valid, pool=not self.sequence_output)


@ENCODERS.register("tokens")
class TokenEncoder(Encoder):
    """For token ids [L] (text): a token embedding, then the same transformer as for [L, D]
    sequences. ``vocab_size`` comes from the dataset's tokenizer."""

    example_input_shape = (12,)
    example_vocab = 50
    reads_steps = True

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int,
        vocab_size: int | None = None,
        layers: int = 2,
        heads: int = 4,
        ff_mult: int = 2,
        dropout: float = 0.1,
        pool: str = "mean",
    ) -> None:
        super().__init__()
        if len(input_shape) != 1:
            raise ConfigError(f"tokens encoder needs [L] token ids, got {list(input_shape)}")
        if vocab_size is None or vocab_size < 1:
            raise ConfigError("tokens encoder needs vocab_size (the tokenizer's vocabulary size)")
        _check_pool(pool)
        self.embed = nn.Embedding(vocab_size, width)
        self.body = _SequenceTransformer(input_shape[0], width, layers, heads, ff_mult, dropout)
        self.sequence_output = pool == "none"
        self.out_dim = width

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.body(self.embed(x.long()), valid, pool=not self.sequence_output)


def default_encoder(shape: Sequence[int], vocab: int | None = None) -> tuple[str, dict[str, Any]]:
    """Pick an encoder from the sample: token ids->tokens, vectors->mlp, [L, D]->transformer,
    small images->cnn, large images and clips->resnet18."""
    rank = len(shape)
    if vocab is not None:
        return "tokens", {"vocab_size": vocab}
    if rank == 1:
        return "mlp", {}
    if rank == 2:
        return "transformer", {}
    if rank == 3:
        return ("cnn", {}) if shape[1] * shape[2] <= 64 * 64 else ("resnet18", {})
    if rank == 4:
        return "resnet18", {}
    return "mlp", {}


def create_encoder(
    name: str | None,
    input_shape: Sequence[int],
    width: int,
    vocab: int | None = None,
    **options: Any,
) -> Encoder:
    """Build a registered encoder; ``name=None`` uses :func:`default_encoder`. ``vocab``: the
    modality's token vocabulary (given to encoders that take ``vocab_size``)."""
    if name is None:
        name, defaults = default_encoder(input_shape, vocab)
        options = {**defaults, **options}
    elif vocab is not None and name == "tokens":
        options = {"vocab_size": vocab, **options}
    factory = ENCODERS.get(name)
    try:
        return factory(input_shape=tuple(input_shape), width=width, **options)
    except TypeError as e:
        raise ConfigError(f"encoder {name!r}: {e}") from None


def list_encoders() -> list[str]:
    return ENCODERS.names()
