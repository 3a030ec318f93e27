"""Every registered method, encoder, fusion and dataset passes the public conformance kit
(``unipair.testing``): one test id per (name, check)."""

from __future__ import annotations

from unipair.data.registry import list_datasets
from unipair.methods import list_methods
from unipair.models.encoders import list_encoders
from unipair.models.fusion import FUSIONS
from unipair.testing import parametrize_with_checks


@parametrize_with_checks(list_methods())
def test_method(name: str, check) -> None:
    check(name)


@parametrize_with_checks(list_encoders(), kind="encoder")
def test_encoder(name: str, check) -> None:
    check(name)


@parametrize_with_checks(FUSIONS.names(), kind="fusion")
def test_fusion(name: str, check) -> None:
    check(name)


@parametrize_with_checks(list_datasets(), kind="dataset")
def test_dataset(name: str, check) -> None:
    check(name)
