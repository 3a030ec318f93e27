"""Command-line start-up: wall time of `unipair` commands against `python -c "import torch"`.

Each command runs as a fresh subprocess (OMP_NUM_THREADS=1, output discarded), so the time is
what a user waits for: interpreter start, imports, argument parsing, output and exit. One
warm-up round fills the file and bytecode caches (PYTHONDONTWRITEBYTECODE is dropped, as in a
normal installation), then the commands run in turns, round after round; the median wall time
is reported with its ratio to the torch import, and the median CPU time (user + system), which
other processes on the machine disturb less. Targets: `--help` at most 0.3x the torch import
(it loads no torch, Lightning or scikit-learn) and `methods` at most 1.2x (torch and pydantic).

    python bench/bench_cli.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TORCH = 'python -c "import torch"'
#: command -> the most it may take, as a multiple of the torch import (None: no target)
TARGETS: dict[str, float | None] = {
    "unipair --help": 0.3,
    "unipair train --help": 0.3,
    "unipair methods": 1.2,
    "unipair datasets": None,
}


def commands() -> dict[str, list[str]]:
    """Each command's argv: the `unipair` script of this interpreter's environment if any."""
    script = Path(sys.executable).parent / "unipair"
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "unipair"]
    return {
        TORCH: [sys.executable, "-c", "import torch"],
        **{name: [*cli, *name.split()[1:]] for name in TARGETS},
    }


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description="unipair command-line start-up time")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds (median reported)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["OMP_NUM_THREADS"] = "1"
    cmds = commands()
    for argv in cmds.values():
        timed(argv, env)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for _ in range(args.repeat):
        for name, argv in cmds.items():
            runs[name].append(timed(argv, env))
    wall = {name: statistics.median(w for w, _ in r) for name, r in runs.items()}
    cpu = {name: statistics.median(c for _, c in r) for name, r in runs.items()}
    print(f"median of {args.repeat} runs, OMP_NUM_THREADS=1")
    print(f"{'command':<28}{'wall s':>8}{'x torch':>9}{'cpu s':>8}{'x torch':>9}  target (wall)")
    for name in cmds:
        limit = TARGETS.get(name)
        met = limit is not None and wall[name] <= limit * wall[TORCH]
        verdict = "" if limit is None else f"<= {limit}x {'met' if met else 'missed'}"
        print(
            f"{name:<28}{wall[name]:>8.3f}{wall[name] / wall[TORCH]:>9.2f}"
            f"{cpu[name]:>8.3f}{cpu[name] / cpu[TORCH]:>9.2f}  {verdict}"
        )


if __name__ == "__main__":
    main()
