"""No silently wrong result, no traceback for a user's mistake: damaged files, interrupted and
resumed runs, and the messages a user gets (issue: reliability)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import unipair
from unipair.cli.main import app
from unipair.engine.checkpoint import read_checkpoint
from unipair.errors import RunDirError
from unipair.testing import _engine_config

runner = CliRunner()


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    return unipair.train(_engine_config("joint", out, {"name": "run"})).run_dir


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _flip_weights(path: Path) -> None:
    """Overwrite the first bytes of every stored tensor: the file still unpickles."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        entries = [i for i in z.infolist() if "/data/" in i.filename and i.file_size >= 16]
    raw = bytearray(path.read_bytes())
    for info in entries:
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        raw[start : start + 16] = bytes(range(16))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip", "weights do not match the checksum"),
        ("truncate", "is damaged (truncated"),
        ("empty", "is empty"),
        ("random", "is damaged"),
    ],
)
def test_damaged_checkpoints_are_reported_for_eval_and_resume(
    finished: Path, tmp_path: Path, damage: str, message: str
) -> None:
    run = _copy_run(finished, tmp_path / "run")  # best.ckpt and last.ckpt: separate files
    for name in ("best.ckpt", "last.ckpt"):
        path = run / name
        if damage == "flip":
            _flip_weights(path)
        elif damage == "truncate":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif damage == "empty":
            path.write_bytes(b"")
        else:
            path.write_bytes(torch.randint(0, 256, (4000,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(RunDirError, match=re.escape(message)):
        read_checkpoint(run / "best.ckpt")
    res = runner.invoke(app, ["eval", str(run)])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output and "weights_only" not in res.output
    (run / "summary.json").unlink()  # unfinished: resume reads last.ckpt
    res = runner.invoke(app, ["train", "--resume", str(run)])
    assert res.exit_code == 2 and message in res.output, res.output


def test_an_intact_checkpoint_verifies(finished: Path) -> None:
    state = read_checkpoint(finished / "best.ckpt")
    assert len(state["checksum"]) == 64
