"""OGM-GE: the modulation coefficients (ours and the reference code's), and its reference
recipe as a preset."""

from __future__ import annotations

import math

import pytest
import torch

from unipair import methods
from unipair.engine.config import load_config
from unipair.methods.common import modulation_coefficients


def test_two_modalities_match_the_paper() -> None:
    """s_v / s_a = 1.5: the visual side is ahead; k_v = 1 - tanh(alpha (rho - 1)) (shifted) or
    1 - tanh(alpha rho) (the reference code), k_a = 1."""
    scores = torch.tensor([10.0, 15.0])  # audio, visual
    shifted = modulation_coefficients(scores, 0.5, "shifted")
    reference = modulation_coefficients(scores, 0.8, "reference")
    assert shifted.tolist() == pytest.approx([1.0, 1 - math.tanh(0.5 * 0.5)])
    assert reference.tolist() == pytest.approx([1.0, 1 - math.tanh(0.8 * 1.5)])
    # the reference jumps at rho = 1 (from 1 to 1 - tanh(alpha)); the shifted one is continuous
    barely = torch.tensor([10.0, 10.001])
    assert modulation_coefficients(barely, 0.8, "shifted")[1] == pytest.approx(1.0, abs=1e-3)
    assert modulation_coefficients(barely, 0.8, "reference")[1] == pytest.approx(
        1 - math.tanh(0.8), abs=1e-3
    )


def test_n_modalities_compare_each_with_the_mean_of_the_others() -> None:
    scores = torch.tensor([30.0, 10.0, 20.0])
    k = modulation_coefficients(scores, 1.0, "shifted")
    rho0 = 30.0 / 15.0  # ahead of the mean of the others
    assert k.tolist() == pytest.approx([1 - math.tanh(rho0 - 1), 1.0, 1.0])


def test_reference_preset_is_the_public_recipe() -> None:
    cfg = load_config("preset:ogm_reference", [], {"dataset.name": "handwritten"})
    hp = methods.validate_hparams("ogm_ge", cfg.method.hparams)
    assert (hp.alpha, hp.coefficient, hp.start_epoch, hp.end_epoch) == (0.8, "reference", 0, 50)
    assert hp.noise and hp.noise_on == "all"
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum) == ("sgd", 1e-3, 0.9)
    assert (cfg.optim.milestones, cfg.optim.gamma, cfg.train.epochs) == ([70], 0.1, 100)
    assert (cfg.model.width, cfg.train.batch_size) == (512, 64)
