"""Helpers of the freezing and feature-cache tests: pretrained backbones saved by the test, run
configs on small synthetic images, checkpoints read back.

``tiny`` is a two-block CNN with BatchNorm on the path the ``timm:`` and ``torchvision:``
encoders take (:class:`BackboneEncoder`: ``weights:``, ``strict``, ``freeze``, ``stem``), small
enough that a run costs well under a second; ``resnet18`` is unipair's own, for the tests that
the brief names it in. Register ``tiny`` with the :func:`tiny_encoder` fixture.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import unipair
from unipair.models.encoders import ENCODERS, ResNet18Encoder
from unipair.models.pretrained import BackboneEncoder, load_weights

IMG = [3, 16, 16]


def tiny_backbone(channels: int = 3) -> nn.Sequential:
    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU())  # fmt: skip

    return nn.Sequential(
        OrderedDict(
            stem=block(channels, 8),
            body=block(8, 16),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
        )
    )


class TinyBackbone(BackboneEncoder):
    """``tiny``: :func:`tiny_backbone` (16 features), its stem the first block."""

    def __init__(
        self,
        input_shape: Sequence[int],
        width: int,
        weights: str | None = None,
        strict: bool = True,
        freeze: str | None = None,
    ) -> None:
        super().__init__()
        backbone = tiny_backbone(input_shape[0])
        info = None if weights is None else load_weights(backbone, weights, strict=strict)
        self._setup(backbone, 16, width, ("stem",), freeze, False, info)


@pytest.fixture
def tiny_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ENCODERS._entries, "tiny", TinyBackbone)


def save_backbone(path: Path, seed: int = 0, kind: str = "tiny") -> dict[str, torch.Tensor]:
    """A backbone's weights with non-default BatchNorm statistics (a frozen run that updated
    them would show), saved to ``path``."""
    torch.manual_seed(seed)
    backbone = ResNet18Encoder(IMG, 16).backbone if kind == "resnet18" else tiny_backbone()
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = {k: v.clone() for k, v in backbone.state_dict().items()}
    torch.save(sd, path)
    return sd


def config(
    tmp_path: Path,
    encoders: dict[str, Any],
    *,
    method: Any = "joint",
    epochs: int = 1,
    name: str = "r",
    kind: str = "tiny",
    **sections: Any,
) -> dict[str, Any]:
    """A run on synthetic images (one modality per entry of ``encoders``: the options of its
    ``kind`` encoder) and an 8-d vector ``vec``."""
    shapes = dict.fromkeys(encoders, IMG) | {"vec": [8]}
    cfg: dict[str, Any] = {
        "dataset": {
            "name": "synthetic",
            "options": {"shapes": shapes, "num_samples": 96, "num_classes": 2, "seed": 1},
        },
        "method": method,
        "model": {
            "width": 16,
            "encoders": {
                **{m: {"name": kind, "options": o} for m, o in encoders.items()},
                "vec": {"name": "mlp", "options": {"hidden": [16], "dropout": 0.0}},
            },
        },
        # a large weight decay: it would visibly move any frozen weight it reached
        "optim": {"optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.5},
        "train": {"epochs": epochs, "batch_size": 32, "seed": 0},
        "fabric": {"accelerator": "cpu"},
        "logging": {"progress": "none", "save_predictions": False},
        "out": str(tmp_path / "runs"),
        "name": name,
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def backbone_of(ckpt: Path, prefix: str = "model.encoders.img.") -> dict[str, torch.Tensor]:
    """The backbone's entries in a checkpoint, named as in the saved weights."""
    sd = torch.load(ckpt, weights_only=True)["method"]
    head = f"{prefix}backbone."
    return {k.removeprefix(head): v for k, v in sd.items() if k.startswith(head)}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    assert set(a) == set(b)
    return all(torch.equal(a[k], b[k]) for k in a)


def interrupted(cfg: dict[str, Any], monkeypatch: pytest.MonkeyPatch, after: int = 1) -> Path:
    """Train ``cfg`` and stop it (as Ctrl-C does) once ``after`` epochs are saved."""
    from unipair.engine.run_dir import RunDir

    original = RunDir.write_metrics

    def crash(self, history):
        original(self, history)
        if len(history) == after:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(RunDir, "write_metrics", crash)
    with pytest.raises(KeyboardInterrupt):
        unipair.train(cfg)
    monkeypatch.setattr(RunDir, "write_metrics", original)
    return Path(cfg["out"]) / cfg["name"]
