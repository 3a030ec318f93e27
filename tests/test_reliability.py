"""No silently wrong result, no traceback for a user's mistake: damaged files, interrupted and
resumed runs, and the messages a user gets (issue: reliability)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import unipair
from backbones import interrupted
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


# ---- runs in the wrong state -----------------------------------------------------------------
def _invoke(*args: str):
    return runner.invoke(app, list(args))


def test_a_finished_run_is_not_resumed(finished: Path) -> None:
    res = _invoke("train", "--resume", str(finished), "--epochs", "5")
    assert res.exit_code == 2 and "is finished (its test split has been read)" in res.output


def test_a_cosine_schedule_cannot_be_extended_on_resume(tmp_path: Path, monkeypatch) -> None:
    run = _interrupted(tmp_path, monkeypatch, {"optim.schedule": "cosine", "train.epochs": 3})
    res = _invoke("train", "--resume", str(run), "--epochs", "6")
    assert res.exit_code == 2 and "cosine schedule over 3 epochs" in res.output, res.output


def _interrupted(tmp_path: Path, monkeypatch, over: dict, after: int = 1) -> Path:
    cfg = _engine_config("joint", tmp_path, {"name": "cut", **over})
    return interrupted(cfg, monkeypatch, after)


def test_resume_restores_a_deleted_metrics_csv(tmp_path: Path, monkeypatch, capsys) -> None:
    run = _interrupted(tmp_path, monkeypatch, {"train.epochs": 3})
    err = capsys.readouterr().err
    assert f"continue with: unipair train --resume {run}" in err  # what Ctrl-C prints
    (run / "metrics.csv").unlink()
    result = unipair.train(run / "config.yaml", resume=run)
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3
    assert len(result.history) == 3


def test_a_run_killed_before_its_first_epoch_says_how_to_start_over(tmp_path: Path) -> None:
    run = tmp_path / "early"
    run.mkdir()
    cfg = _engine_config("joint", tmp_path, {"name": "early"})
    (run / "config.yaml").write_text(unipair.RunConfig.from_mapping(cfg).to_yaml())
    with pytest.raises(RunDirError, match=r"holds no finished epoch.*delete it to start over"):
        unipair.train(cfg)
    with pytest.raises(RunDirError, match="stopped before its first epoch ended; delete it"):
        unipair.train(cfg, resume=run)


# ---- two processes, one folder ----------------------------------------------------------------
def test_a_locked_run_directory_is_refused(tmp_path: Path) -> None:
    from unipair.errors import WriteError
    from unipair.io import exclusive_lock

    with (
        exclusive_lock(tmp_path / "run", "training"),
        pytest.raises(WriteError, match=r"in use by another unipair process \(pid \d+, training\)"),
    ):
        unipair.train(_engine_config("joint", tmp_path, {"name": "run"}))
    # released: the same run now trains
    assert unipair.train(_engine_config("joint", tmp_path, {"name": "run"})).summary


def test_a_locked_compare_folder_is_refused(tmp_path: Path) -> None:
    from unipair.errors import WriteError
    from unipair.evaluation.compare import run_compare
    from unipair.io import exclusive_lock

    with exclusive_lock(tmp_path, "compare"), pytest.raises(WriteError, match="in use"):
        run_compare([], tmp_path)


# ---- full or read-only disks --------------------------------------------------------------------
def test_a_full_disk_while_checkpointing_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import errno

    from lightning_fabric import Fabric

    def full_disk(self, path, state, *args, **kwargs):
        Path(path).write_bytes(b"partial")  # what a full disk leaves behind
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Fabric, "save", full_disk)
    cfg = _engine_config("joint", tmp_path, {"name": "run"})
    res = _invoke("train", "--config", _write_yaml(tmp_path, cfg))
    assert res.exit_code == 2, res.output
    assert "cannot write" in res.output and "last.ckpt: no space left" in res.output
    assert not list((tmp_path / "run").glob(".*tmp")), "a partial temporary file was left"


def test_a_read_only_output_folder_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import errno

    mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if "ro" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system")
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    cfg = _engine_config("joint", tmp_path / "ro", {"name": "run"})
    res = _invoke("train", "--config", _write_yaml(tmp_path, cfg))
    assert res.exit_code == 2 and "read-only file system" in res.output, res.output
    res = _invoke("compare", "--config", _write_yaml(tmp_path, cfg), "--out", str(tmp_path / "ro"))
    assert res.exit_code == 2 and "read-only file system" in res.output, res.output


def _write_yaml(tmp_path: Path, cfg: dict) -> str:
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "method"}))
    return str(path)


@pytest.mark.slow
def test_compare_workers_die_with_a_killed_compare(tmp_path: Path) -> None:
    """kill -9 of ``compare --jobs 2`` leaves no worker training on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = _engine_config("joint", tmp_path, {"train.epochs": 500})
    cfg.pop("method")
    cfg.pop("out")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "unipair", "compare", "-c", str(tmp_path / "c.yaml"),
         "--methods", "joint,mla", "--seeds", "0", "--no-unimodal", "--jobs", "2",
         "--threads", "1", "--out", str(tmp_path / "out")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def children() -> list[int]:
        found = []
        for task in Path(f"/proc/{proc.pid}/task").glob("*"):
            text = (task / "children").read_text() if (task / "children").exists() else ""
            found += [int(c) for c in text.split()]
        return found

    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.5)
        workers = children()
    assert len(workers) >= 2, "the workers never started"
    time.sleep(3)  # let them import and start training
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return False
        return state != "Z"

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(alive(w) for w in workers):
        time.sleep(0.2)
    survivors = [w for w in workers if alive(w)]
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived the killed compare"


# ---- settings the machine cannot honour -------------------------------------------------------
def test_a_gpu_where_there_is_none_is_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    res = _invoke("train", "--accelerator", "gpu", "--epochs", "1", "--out", str(tmp_path))
    assert res.exit_code == 2 and "no CUDA GPU is visible here" in res.output, res.output


@pytest.mark.slow
def test_two_devices_with_the_default_strategy_train_mla(tmp_path: Path) -> None:
    """``--devices 2`` alone picks a DDP strategy that tolerates MLA's unused parameters."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "unipair", "train", "--method", "mla", "--epochs", "1",
           "--accelerator", "cpu", "--devices", "2", "--out", str(tmp_path), "--name", "r",
           "--set", "logging.progress=none"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    assert json.loads((tmp_path / "r" / "summary.json").read_text())["world_size"] == 2


def test_images_too_small_for_the_encoder_name_the_modality(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, img=rng.normal(size=(90, 1, 4, 4)), vec=rng.normal(size=(90, 3)),
             label=np.arange(90) % 3)  # fmt: skip
    res = _invoke("train", "--dataset", str(path), "--epochs", "1", "--out", str(tmp_path))
    assert res.exit_code == 2, res.output
    assert "modality 'img' (shape [1, 4, 4])" in res.output and "at least 8x8" in res.output


def test_classes_too_small_to_split_say_what_is_needed(tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "rare.npz"
    labels = np.array([0] * 40 + [1] * 40 + [2])  # class 2 has one sample
    np.savez(path, a=np.zeros((81, 2)), b=np.ones((81, 2)), label=labels)
    res = _invoke("datasets", "show", str(path))
    assert res.exit_code == 2, res.output
    for part in ("class-stratified test part", "at least 2 samples", "the smallest has 1",
                 "'split' array"):  # fmt: skip
        assert part in res.output, res.output
    assert "test_size" not in res.output  # not scikit-learn's wording


def test_compare_reports_a_diverged_run_as_failed_and_prints_progress(
    tmp_path: Path, capfd
) -> None:
    from unipair.evaluation.compare_cli import run_compare_command

    cfg = _engine_config("joint", tmp_path, {})
    cfg.pop("method")
    cfg.pop("out")
    cfg["compare"] = {"hparams": {}, "missing_rates": [0.0]}
    path = Path(_write_yaml(tmp_path, cfg))
    result = run_compare_command(
        dataset=None, methods=["joint", "mla"], seeds=[0], config=str(path), jobs=1,
        epochs=None, out=str(tmp_path / "out"), unimodal=False,
        overrides=["optim.lr=1e30", "optim.optimizer=sgd"],
    )  # fmt: skip
    assert {label for label, _, _ in result.failures} == {"joint", "mla"}
    assert all("training diverged" in error for _, _, error in result.failures)
    assert not result.runs  # nothing averaged in
    out = capfd.readouterr().out
    assert "no run finished" in out


def test_compare_prints_each_runs_epochs(tmp_path: Path, capfd) -> None:
    from unipair.evaluation.compare_cli import run_compare_command

    cfg = _engine_config("joint", tmp_path, {})
    cfg.pop("method")
    cfg.pop("out")
    cfg["compare"] = {"missing_rates": [0.0]}
    run_compare_command(
        dataset=None, methods=["joint"], seeds=[0], config=_write_yaml(tmp_path, cfg), jobs=1,
        epochs=None, out=str(tmp_path / "out"), unimodal=False, overrides=[],
    )  # fmt: skip
    out = capfd.readouterr().out
    assert "joint seed 0: epoch     1/2" in out and "joint seed 0: epoch     2/2" in out


@pytest.mark.parametrize("writer", ["config", "figure"])
def test_a_full_disk_for_any_output_is_one_error(tmp_path: Path, monkeypatch, writer) -> None:
    import errno
    import os

    from unipair.errors import WriteError

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    if writer == "config":
        from unipair.io import write_text

        with pytest.raises(WriteError, match=r"config\.yaml: no space left"):
            write_text(tmp_path / "config.yaml", "x: 1\n")
    else:
        import matplotlib.pyplot as plt

        from unipair.evaluation.figures import save_figure

        fig = plt.figure()
        with pytest.raises(WriteError, match=r"f\.png: no space left"):
            save_figure(fig, tmp_path / "f.png")
    assert not list(tmp_path.glob(".*tmp")), "a partial temporary file was left"
