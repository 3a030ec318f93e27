"""What each command imports: the command line parses and helps without torch or Lightning.

Import time is what makes a CLI slow, so these tests pin which heavy packages each command
loads (the times themselves are measured by bench/bench_cli.py). Every check runs a fresh
interpreter: this test session has long imported everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import unipair
from unipair.cli.errors import is_user_error, user_errors
from unipair.errors import ConfigError

HEAVY = {"torch", "lightning", "lightning_fabric", "torchmetrics", "sklearn", "scipy", "matplotlib"}
#: the training engine: listing or describing datasets needs none of it
ENGINE = {"lightning", "lightning_fabric", "torchmetrics"}

#: last line of every probe: the top-level packages the interpreter has loaded
REPORT = """
import json, sys
print("\\n" + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""
#: runs the command as ``python -m unipair`` does (argv after ``-c``), then reports
CLI = """
import runpy, sys
sys.argv = ["unipair", *sys.argv[1:]]
try:
    runpy.run_module("unipair", run_name="__main__")
except SystemExit as e:
    assert not e.code, f"exit code {e.code}"
"""


def _loaded(script: str, *args: str, tmp_path: Path) -> set[str]:
    """Top-level packages loaded by ``script`` in a fresh interpreter (which must succeed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIPAIR_")}
    env.update(OMP_NUM_THREADS="1", UNIPAIR_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-c", script + REPORT, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return set(json.loads(proc.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["train", "--help"],
        ["eval", "--help"],
        ["compare", "--help"],
        ["diagnose", "--help"],
        ["viz", "--help"],
        ["methods", "--help"],
        ["datasets", "--help"],
        ["datasets", "show", "--help"],
    ],
)
def test_help_loads_no_heavy_package(args: list[str], tmp_path: Path) -> None:
    heavy = _loaded(CLI, *args, tmp_path=tmp_path) & HEAVY
    assert heavy == set(), f"unipair {' '.join(args)} imported {sorted(heavy)}"


def test_methods_loads_torch_but_no_engine_metrics_or_sklearn(tmp_path: Path) -> None:
    assert _loaded(CLI, "methods", tmp_path=tmp_path) & HEAVY == {"torch"}


@pytest.mark.parametrize(
    "args",
    [
        ["datasets"],
        ["datasets", "show", "synthetic"],
        ["datasets", "show", "synthetic", "--option", "num_samples=120"],
    ],
)
def test_datasets_load_no_lightning_or_torchmetrics(args: list[str], tmp_path: Path) -> None:
    loaded = _loaded(CLI, *args, tmp_path=tmp_path)
    assert "torch" in loaded  # the datasets were really loaded and described
    assert not loaded & ENGINE, sorted(loaded)


def test_import_unipair_loads_no_torch(tmp_path: Path) -> None:
    script = """
import unipair
assert unipair.__version__ and "train" in dir(unipair)
"""
    assert _loaded(script, tmp_path=tmp_path) & HEAVY == set()


def test_public_names_resolve_on_first_use(tmp_path: Path) -> None:
    script = """
import unipair
assert unipair.train.__module__ == "unipair.engine.trainer"
assert unipair.evaluate.__module__ == "unipair.evaluation.evaluate"
assert unipair.load_config.__module__ == "unipair.engine.config"
assert unipair.RunConfig.__name__ == "RunConfig" and unipair.RunResult.__name__ == "RunResult"
"""
    assert {"torch", "lightning_fabric"} <= _loaded(script, tmp_path=tmp_path)


def test_lazy_names_are_the_real_objects() -> None:
    from unipair.engine.trainer import train

    assert unipair.train is train
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        _ = unipair.trian  # type: ignore[attr-defined]


def test_methods_need_no_dataset_loaders(tmp_path: Path) -> None:
    # methods and models import unipair.data.batch, which runs unipair/data/__init__.py
    assert _loaded("import unipair.methods", tmp_path=tmp_path) & HEAVY == {"torch"}


def test_dataset_registry_lists_without_loading_a_loader(tmp_path: Path) -> None:
    script = """
from unipair.data.registry import DATASETS, is_npz_path, list_datasets
assert {"avdigits", "handwritten", "synthetic", "crema_d", "mosi"} <= set(list_datasets())
assert "embedded" in DATASETS.get("handwritten").description
assert is_npz_path("mine.npz") and not is_npz_path("handwritten")
"""
    loaded = _loaded(script, tmp_path=tmp_path)
    assert not loaded & {*HEAVY, "numpy"}, sorted(loaded)


def test_cli_error_handling_imports_no_pydantic(tmp_path: Path) -> None:
    assert "pydantic" not in _loaded("import unipair.cli.errors", tmp_path=tmp_path)


class _Point(BaseModel):
    x: int


def test_user_errors_are_unipair_and_validation_errors_only() -> None:
    with pytest.raises(ValidationError) as info:
        _Point.model_validate({"x": "not a number"})
    assert is_user_error(info.value)
    assert is_user_error(ConfigError("bad option"))
    assert not is_user_error(RuntimeError("a bug"))
    with pytest.raises(SystemExit) as exit_info, user_errors():
        raise info.value
    assert exit_info.value.code == 2
    with pytest.raises(RuntimeError), user_errors():
        raise RuntimeError("a bug keeps its traceback")
