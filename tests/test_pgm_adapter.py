"""The PgM adapter guide (docs/pgm_adapter.md) is executable: run its code blocks in order."""

from __future__ import annotations

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "pgm_adapter.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_doc_has_examples() -> None:
    assert len(_blocks()) >= 3


def test_pgm_adapter_doc_example_runs() -> None:
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": "pgm_adapter_doc"}
    for i, code in enumerate(_blocks()):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
    # the user-defined model was trained through the adapter, with per-(modality, part) lrs
    names = [g["name"] for g in namespace["optimizer"].param_groups]  # type: ignore[attr-defined]
    assert "audio/uni" in names and "image/encoder" in names and "shared/task" in names
    lr = {g["name"]: g["lr"] for g in namespace["optimizer"].param_groups}  # type: ignore[attr-defined]
    assert lr["audio/uni"] == 2 * lr["audio/encoder"]
    assert namespace["fused"] > 0.8  # type: ignore[operator]
