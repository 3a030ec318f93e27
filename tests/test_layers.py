"""The folders are layers, and imports only go down: data < models < methods < engine <
evaluation < cli. A module may import its own layer and the layers below, never one above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "unipair"
LAYERS = ["data", "models", "methods", "engine", "evaluation", "cli"]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "unipair" or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_layer_above_its_own(layer: str) -> None:
    own = LAYERS.index(layer)
    upward = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for line, module in _imports(path):
            other = _layer(module)
            if other is not None and other > own:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert not upward, "\n".join(upward)


def test_the_check_sees_imports() -> None:
    """The walker finds imports inside functions too (lazy imports count as dependencies)."""
    found = [m for _, m in _imports(SRC / "evaluation" / "evaluate.py")]
    assert any(m.startswith("unipair.engine") for m in found)
