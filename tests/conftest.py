"""Shared fixtures: real data roots (../shared/data by default) and a single torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT.parent / "shared" / "data"

torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--data-root",
        default=os.environ.get("UNIPAIR_TEST_DATA", str(DEFAULT_DATA)),
        help="folder holding handwritten/, fsdd/ and mnist/ (default: ../shared/data or "
        "$UNIPAIR_TEST_DATA)",
    )


@pytest.fixture(scope="session")
def data_root(request: pytest.FixtureRequest) -> Path:
    root = Path(request.config.getoption("--data-root"))
    if not root.is_dir():
        pytest.skip(f"real test data not found at {root} (set --data-root or UNIPAIR_TEST_DATA)")
    return root


@pytest.fixture(scope="session")
def fsdd_root(data_root: Path) -> Path:
    return data_root / "fsdd" / "recordings"


@pytest.fixture(scope="session")
def mnist_root(data_root: Path) -> Path:
    return data_root / "mnist"


def pytest_configure(config: pytest.Config) -> None:
    """Point dataset loaders that read local copies (avdigits) at the real test data, so the
    conformance kit's dataset checks run on them too."""
    root = Path(config.getoption("--data-root"))
    for env, sub in (("UNIPAIR_FSDD_ROOT", "fsdd/recordings"), ("UNIPAIR_MNIST_ROOT", "mnist")):
        if (root / sub).is_dir():
            os.environ.setdefault(env, str(root / sub))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is available here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
