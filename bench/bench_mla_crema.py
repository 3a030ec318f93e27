"""Training throughput and peak memory of ``joint`` and ``mla`` at CREMA-D scale, on CPU.

Synthetic data shaped like CREMA-D as MLA's reference code feeds it (audio spectrogram
[1, 1024, 128], 3 visual frames [3, 3, 224, 224], 6 classes), two ResNet-18 encoders with 512-d
features, batch 64, the reference optimizer (SGD 1e-3, momentum 0.9, weight decay 1e-4). Each
(method, precision) runs in a fresh subprocess, one after another, so the peak RSS
(``getrusage`` maxrss) is that configuration's own; one torch thread throughout.

    python bench/bench_mla_crema.py                      # joint + mla, fp32 + bf16-mixed
    python bench/bench_mla_crema.py --methods mla --precisions 32-true --steps 1
    python bench/bench_mla_crema.py --allocator jemalloc   # runtime option, see below

``samples/s`` is wall clock; ``cpu samples/s`` divides by the process's user+sys CPU time, which
another job sharing the cores does not inflate. ``sys`` is kernel time, almost all of it page
faults: glibc serves every block over 32 MB (most activations here) with a fresh ``mmap`` and
returns it on free, so every step zero-fills its activations again. ``--allocator jemalloc``
preloads jemalloc with page purging off (``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``),
which reuses those pages; it is a property of the runtime, not of the method, and is reported
apart from the targets. Measured alternatives for MLA fp32 (2026-11-22): glibc with mmap off
(``MALLOC_MMAP_MAX_=0``, large trim threshold) runs 2.34 samples/s but peaks at 8.15 GB
(fragmentation); PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` is slower (1.86 samples/s, more sys time).

Reference point (the public MLA code, same shapes and encoders, batch 64, this CPU, one
thread): 1.1 samples/s and 9.4 GB peak RSS in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SHAPES = {"audio": [1, 1024, 128], "visual": [3, 3, 224, 224]}
REFERENCE = {"samples_per_s": 1.1, "peak_rss_gb": 9.4}
TARGET = {"samples_per_s": 2 * REFERENCE["samples_per_s"], "peak_rss_gb": 0.6 * 9.4}
PRECISIONS = {"32-true": "fp32", "bf16-mixed": "bf16-mixed"}


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _cpu_s() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def worker(method_name: str, precision: str, batch: int, warmup: int, steps: int) -> dict:
    """One configuration, in this (fresh) process: warm-up steps, then timed steps."""
    import torch
    from lightning_fabric import Fabric

    torch.set_num_threads(1)
    torch.manual_seed(0)
    from unipair import methods
    from unipair.data.synthetic import load_synthetic
    from unipair.engine.config import OptimConfig
    from unipair.engine.optim import build_optimizer

    rss_start = _rss_gb()
    n = batch * (warmup + steps)
    data = load_synthetic(
        shapes=SHAPES, num_classes=6, num_samples=max(int(n / 0.65) + 8, 120), seed=0, lazy=True
    )
    model = {"width": 512, "encoders": {"*": {"name": "resnet18"}}}
    method = methods.create(method_name, data.spec, model)
    optim = OptimConfig(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4)
    optimizer = build_optimizer(method.parameter_groups(), optim)
    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)  # type: ignore[arg-type]
    module, optimizer = fabric.setup(method, optimizer)
    step = methods.TrainStep(module, optimizer, backward=fabric.backward)
    method.train()
    times, user, system = [], [], []
    for i in range(warmup + steps):
        b = data.train.__getitems__(list(range(i * batch, (i + 1) * batch)))
        u0, s0 = _cpu_s()
        t0 = time.perf_counter()
        logs = method.training_step(b, step)
        times.append(time.perf_counter() - t0)
        u1, s1 = _cpu_s()
        user.append(u1 - u0)
        system.append(s1 - s0)
        step.global_step += 1
        print(
            f"  [{method_name} {precision}] step {i}: {times[-1]:.1f} s, "
            f"user {user[-1]:.1f} s, sys {system[-1]:.1f} s, loss {float(logs['loss']):.3f}, "
            f"peak rss {_rss_gb():.2f} GB",
            file=sys.stderr,
            flush=True,
        )
    timed = times[warmup:]
    cpu = sum(user[warmup:]) + sum(system[warmup:])
    return {
        "method": method_name,
        "precision": precision,
        "batch": batch,
        "timed_steps": len(timed),
        "s_per_step": sum(timed) / len(timed),
        "samples_per_s": batch * len(timed) / sum(timed),
        "cpu_samples_per_s": batch * len(timed) / cpu,
        "user_s_per_step": sum(user[warmup:]) / len(timed),
        "sys_s_per_step": sum(system[warmup:]) / len(timed),
        "peak_rss_gb": _rss_gb(),
        "startup_rss_gb": rss_start,
        "threads": torch.get_num_threads(),
    }


def _run_one(args: argparse.Namespace, method: str, precision: str) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--methods",
        method,
        "--precisions",
        precision,
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.allocator == "jemalloc":
        if not os.path.exists(JEMALLOC):
            raise SystemExit(
                f"--allocator jemalloc: {JEMALLOC} not found (apt install libjemalloc2)"
            )
        env["LD_PRELOAD"] = JEMALLOC
        env["MALLOC_CONF"] = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["allocator"] = args.allocator
    return row


def table(rows: list[dict]) -> str:
    cols = [
        ("method", 6), ("precision", 10), ("allocator", 9), ("s/step", 6), ("user s", 6),
        ("sys s", 5), ("samples/s", 9), ("cpu samples/s", 13), ("vs ref", 6),
        ("peak RSS GB", 11), ("vs ref", 6),
    ]  # fmt: skip

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) for v, (_, w) in zip(values, cols, strict=True)) + " |"

    out = [line([c for c, _ in cols]), "|" + "|".join("-" * (w + 2) for _, w in cols) + "|"]
    ref = REFERENCE
    out.append(
        line(["ref", "fp32", "glibc", f"{64 / ref['samples_per_s']:.1f}", "", "",
              f"{ref['samples_per_s']:.2f}", "", "1.00x", f"{ref['peak_rss_gb']:.2f}", "100%"])
    )  # fmt: skip
    for r in rows:
        out.append(
            line([
                r["method"], PRECISIONS[r["precision"]], r.get("allocator", "glibc"),
                f"{r['s_per_step']:.1f}", f"{r['user_s_per_step']:.1f}",
                f"{r['sys_s_per_step']:.1f}", f"{r['samples_per_s']:.2f}",
                f"{r['cpu_samples_per_s']:.2f}",
                f"{r['samples_per_s'] / ref['samples_per_s']:.2f}x",
                f"{r['peak_rss_gb']:.2f}", f"{r['peak_rss_gb'] / ref['peak_rss_gb']:.0%}",
            ])
        )  # fmt: skip
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["joint", "mla"])
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--allocator", choices=["glibc", "jemalloc"], default="glibc")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        row = worker(args.methods[0], args.precisions[0], args.batch, args.warmup, args.steps)
        print(json.dumps(row))
        return
    rows = []
    for precision in args.precisions:
        for method in args.methods:
            rows.append(_run_one(args, method, precision))
            print(f"{method} {precision}: {json.dumps(rows[-1])}", flush=True)
    print()
    print(table(rows))
    for r in rows:
        if r["method"] == "mla" and r["precision"] == "32-true" and r["allocator"] == "glibc":
            ok_speed = r["samples_per_s"] >= TARGET["samples_per_s"]
            ok_mem = r["peak_rss_gb"] <= TARGET["peak_rss_gb"]
            print(
                f"\nmla fp32 target: >= {TARGET['samples_per_s']:.1f} samples/s "
                f"({'met' if ok_speed else 'MISSED'}), <= {TARGET['peak_rss_gb']:.2f} GB peak RSS "
                f"({'met' if ok_mem else 'MISSED'})"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
