"""The method-writing guide (docs/extending.md) is executable: its method registers and passes
the conformance kit exactly as the guide tells users to run it."""

from __future__ import annotations

import re
from pathlib import Path

from unipair.methods.registry import METHODS
from unipair.testing import parametrize_with_checks

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)

if "prototypes" not in METHODS:  # the guide's first block defines and registers the method
    exec(compile(BLOCKS[0], f"{DOC.name}[block 0]", "exec"), {"__name__": "extending_doc"})


def test_the_guide_runs_the_kit_as_this_file_does() -> None:
    assert '@parametrize_with_checks(["prototypes"])' in BLOCKS[1]


@parametrize_with_checks(["prototypes"])
def test_prototypes(name: str, check) -> None:
    check(name)
