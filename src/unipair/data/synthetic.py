"""Seeded synthetic multimodal data with a controllable dominant modality.

Each class c has a latent prototype mu[m, c] (dimension ``latent_dim``) per modality m. A sample
draws z = a_m * mu[m, y] + N(0, I) and embeds it into the modality's shape with a fixed random
projection, plus Gaussian noise. a_m, the *informativeness*, sets how separable the classes are in
that modality alone, so a modality with a larger a_m dominates by a chosen margin.

Small datasets are materialised. Large shapes (a spectrogram [1, 1024, 128], video frames
[3, 3, 224, 224]) are generated per batch from a fixed bank of noise tensors, so benchmarks pay
almost nothing for data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from unipair.data.assemble import assemble
from unipair.data.dataset import (
    SPLITS,
    LazyMultimodalDataset,
    ModalitySpec,
    MultimodalData,
    TaskSpec,
    fingerprint,
)
from unipair.data.splits import stratified_split
from unipair.errors import ConfigError

__all__ = ["load_interaction", "load_synthetic"]

MATERIALISE_LIMIT = 50_000_000  # elements; above this, samples are generated on demand
NOISE_BANK = 32


def _resolve_shapes(
    modalities: int | Sequence[str] | None, shapes: Mapping[str, Sequence[int]] | Sequence | None
) -> dict[str, tuple[int, ...]]:
    if isinstance(shapes, Mapping):
        return {str(m): tuple(int(d) for d in s) for m, s in shapes.items()}
    if isinstance(modalities, int) or modalities is None:
        names = [f"m{i}" for i in range(2 if modalities is None else modalities)]
    else:
        names = [str(m) for m in modalities]
    if shapes is None:
        return {m: (16,) for m in names}
    shapes = list(shapes)
    if len(shapes) != len(names):
        raise ConfigError(f"synthetic: {len(shapes)} shapes given for {len(names)} modalities")
    return {m: tuple(int(d) for d in s) for m, s in zip(names, shapes, strict=True)}


def load_synthetic(
    modalities: int | Sequence[str] | None = None,
    shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]] | None = None,
    num_classes: int = 4,
    num_samples: int = 600,
    informativeness: Sequence[float] | Mapping[str, float] | None = None,
    latent_dim: int = 8,
    noise: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    lazy: bool | None = None,
) -> MultimodalData:
    """Modalities ``m0, m1, ...`` (or named by ``shapes``); the first is the most informative."""
    dims = _resolve_shapes(modalities, shapes)
    names = list(dims)
    if len(names) < 1:
        raise ConfigError("synthetic: need at least one modality")
    if informativeness is None:
        info = {m: 2.0 / (1 + i) for i, m in enumerate(names)}
    elif isinstance(informativeness, Mapping):
        info = {m: float(informativeness[m]) for m in names}
    else:
        if len(informativeness) != len(names):
            raise ConfigError(f"synthetic: informativeness needs {len(names)} values")
        info = dict(zip(names, map(float, informativeness), strict=True))

    rng = torch.Generator().manual_seed(seed)
    protos = {m: torch.randn(num_classes, latent_dim, generator=rng) for m in names}
    projections = {
        m: torch.randn(latent_dim, math.prod(s), generator=rng) / math.sqrt(latent_dim)
        for m, s in dims.items()
    }
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=rng)]
    latents = {
        m: info[m] * protos[m][labels] + torch.randn(num_samples, latent_dim, generator=rng)
        for m in names
    }
    total = num_samples * sum(math.prod(s) for s in dims.values())
    lazy = total > MATERIALISE_LIMIT if lazy is None else lazy
    options = dict(
        shapes=dims, classes=num_classes, n=num_samples, info=info, k=latent_dim, noise=noise
    )

    if not lazy:
        inputs = {
            m: (
                latents[m] @ projections[m]
                + noise * torch.randn(num_samples, math.prod(s), generator=rng)
            ).view(num_samples, *s)
            for m, s in dims.items()
        }
        return assemble(
            "synthetic",
            inputs,
            labels.numpy(),
            seed=seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            standardize=False,
            num_classes=num_classes,
            source=repr(options),
            info={"informativeness": info},
        )

    bank = {
        m: noise * torch.randn(NOISE_BANK, math.prod(s), generator=rng) for m, s in dims.items()
    }

    def make(idx: Tensor) -> dict[str, Tensor]:
        slot = (idx * 7) % NOISE_BANK
        return {
            m: torch.addmm(bank[m][slot], latents[m][idx], projections[m]).view(len(idx), *s)
            for m, s in dims.items()
        }

    split = stratified_split(labels.numpy(), val_fraction, test_fraction, seed)
    source = fingerprint("synthetic", repr(options), seed)  # all that make() depends on
    parts = {
        s: LazyMultimodalDataset(
            labels[rows], make, names, index=torch.as_tensor(rows), source=source
        )
        for s, rows in split.items()
    }
    spec = TaskSpec(tuple(ModalitySpec(m, s) for m, s in dims.items()), num_classes)
    return MultimodalData(
        name="synthetic",
        spec=spec,
        seed=seed,
        fingerprint=fingerprint("synthetic", repr(options), *(split[s] for s in SPLITS)),
        info={"informativeness": info, "lazy": True},
        **parts,
    )


def load_interaction(
    weight: float = 0.5,
    dim: int = 16,
    num_samples: int = 2000,
    noise: float = 0.1,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> MultimodalData:
    """A task family from uni-modal to cross-modal: two modalities ``a`` and ``b``, binary label
    y = [w z_a z_b + (1 - w) (u_a + u_b) / sqrt(2) > 0] with independent standard normal
    latents, each modality a random linear embedding of its own (z, u) plus noise.

    ``weight`` w = 0: the label is a sum of one term per modality (each modality alone is
    right about 75% of the time; a late fusion of the two can be right always). w = 1: the sign
    of a product, an XOR of the two modalities' signs (each alone, and any late fusion
    f(a) + g(b), is at chance; a model must combine the modalities before deciding). Between,
    a chosen mix: the "distribution across tasks" of uni-modal and paired-modal evidence.
    """
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"interaction: weight must lie in [0, 1], got {weight}")
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(num_samples, 2, generator=rng)
    u = torch.randn(num_samples, 2, generator=rng)
    score = weight * z[:, 0] * z[:, 1] + (1 - weight) * u.sum(1) / math.sqrt(2)
    labels = (score > 0).long()
    inputs = {}
    for i, m in enumerate(("a", "b")):
        latent = torch.stack([z[:, i], u[:, i]], dim=1)
        projection = torch.randn(2, dim, generator=rng)
        inputs[m] = latent @ projection + noise * torch.randn(num_samples, dim, generator=rng)
    options = dict(weight=weight, dim=dim, n=num_samples, noise=noise)
    return assemble(
        "interaction",
        inputs,
        labels.numpy(),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        standardize=True,
        num_classes=2,
        source=repr(options),
        info={"interaction_weight": weight},
    )
