"""Training throughput and peak memory at CREMA-D scale on CPU, optionally side by side with the
public MLA code.

Synthetic data shaped like CREMA-D as MLA's reference code feeds it (audio spectrogram
[1, 1024, 128], 3 visual frames [3, 3, 224, 224], 6 classes), two ResNet-18 encoders with 512-d
features, batch 64, the reference optimizer (SGD 1e-3, momentum 0.9, weight decay 1e-4). Each
(method, precision) runs in a fresh subprocess, one after another, so the peak RSS
(``getrusage`` maxrss) is that configuration's own; one torch thread throughout.

    python bench/bench_mla_crema.py                                   # joint + mla, fp32
    python bench/bench_mla_crema.py --methods joint ogm_ge mla pgm --reference ../mla-ref
    python bench/bench_mla_crema.py --allocator jemalloc              # runtime option, see below

**Side by side.** Machines differ several-fold in absolute speed, so a ratio to a number
measured elsewhere means little. With ``--reference PATH`` (a local checkout of
github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation, never committed)
every configuration runs at the same moment as the reference harness
(``../shared/bench/reference_mla.py``, or ``--harness``): ours pinned to CPU 0, the reference
to CPU 1, each one thread, the same number of training steps. ``mla`` is paired with the
reference's MLA (``mla_dynamic``), every other method with its joint training
(``joint_concat``), so each of ours shares the machine with the same kind of neighbour. The
reference's CPU seconds per step come from ``reference_launcher.py``; it always runs with glibc
malloc, as its users run it, whatever ``--allocator`` says. Without a reference the
script prints absolute figures only and says that no ratio was measured.

``samples/s`` is wall clock over the timed steps (after ``--warmup``); ``user``/``sys`` are CPU
seconds per step. ``sys`` is kernel time, almost all of it page faults: glibc serves every block
over 32 MB (most activations here) with a fresh ``mmap`` and returns it on free, so every step
zero-fills its activations again. ``--allocator jemalloc`` preloads jemalloc with page purging
off (``MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1``, or ``--malloc-conf``), which reuses
those pages; it is a property of the runtime, not of the method, and is reported apart.
``vs joint`` is a method's seconds per step over our joint's at the same precision and
allocator.
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
#: issue 16's goals for MLA fp32, as ratios to the reference measured side by side
GOAL = {"speed": 2.3, "memory": 0.40}
PRECISIONS = {"32-true": "fp32", "bf16-mixed": "bf16-mixed"}
HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(HERE, "..", "..", "shared", "bench", "reference_mla.py")


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _cpu_s() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def worker(
    method_name: str,
    precision: str,
    batch: int,
    warmup: int,
    steps: int,
    compile_encoders: bool = False,
) -> dict:
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
    if compile_encoders:
        from unipair.models.encoders import compile_encoders as compile_all

        compile_all(method)  # as fabric.compile: true does
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


def _env(args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.allocator == "jemalloc":
        if not os.path.exists(JEMALLOC):
            raise SystemExit(
                f"--allocator jemalloc: {JEMALLOC} not found (apt install libjemalloc2)"
            )
        env["LD_PRELOAD"] = JEMALLOC
        env["MALLOC_CONF"] = args.malloc_conf
    return env


def _pinned(cpu: int | None):
    """preexec_fn pinning the child to one CPU (None: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _reference_cmd(args: argparse.Namespace, method: str) -> list[str]:
    mode = "mla_dynamic" if method == "mla" else "joint_concat"
    return [
        sys.executable,
        os.path.join(HERE, "reference_launcher.py"),
        args.harness,
        "--batch_size", str(args.batch),
        "--train_batches", str(args.warmup + args.steps),
        "--test_batches", "1",
        "--threads", "1",
        "--mode", mode,
    ]  # fmt: skip


def _reference_row(stdout: str, warmup: int) -> dict:
    """Steady-state figures of the reference from its JSON and the launcher's clock marks."""
    text, _, marks_line = stdout.rpartition("REFERENCE_MARKS ")
    res = json.loads(text[text.index("{") : text.rindex("}") + 1])
    marks = json.loads(marks_line)
    steps = len(res["train_seconds_per_batch"])
    # marks: before training, one per batch handed out, after training (then evaluation)
    edges = marks[1 : steps + 2]
    timed = list(range(warmup, steps))
    wall = [edges[i + 1][0] - edges[i][0] for i in timed]
    user = [edges[i + 1][1] - edges[i][1] for i in timed]
    system = [edges[i + 1][2] - edges[i][2] for i in timed]
    return {
        "mode": res["mode"],
        "s_per_step": sum(wall) / len(wall),
        "samples_per_s": res["batch_size"] * len(wall) / sum(wall),
        "user_s_per_step": sum(user) / len(user),
        "sys_s_per_step": sum(system) / len(system),
        "peak_rss_gb": res["peak_rss_MB"] / 1024,
        "torch": res["torch"],
    }


def _run_one(args: argparse.Namespace, method: str, precision: str) -> dict:
    """One configuration of ours, alone or at the same moment as the reference harness."""
    cmd = [
        sys.executable, os.path.abspath(__file__), "--worker",
        "--methods", method, "--precisions", precision, "--batch", str(args.batch),
        "--warmup", str(args.warmup), "--steps", str(args.steps),
        *(["--compile"] if args.compile else []),
    ]  # fmt: skip
    side_by_side = args.reference is not None
    ours = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(args),
        preexec_fn=_pinned(0 if side_by_side else None),
    )
    ref = None
    if side_by_side:
        # the reference runs as its users run it: glibc malloc, whatever --allocator says
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env["MLA_REPO"] = os.path.abspath(args.reference)
        env["MLA_OUT"] = os.path.join(env.get("TMPDIR", "/tmp"), "unipair_mla_reference")
        ref = subprocess.Popen(
            _reference_cmd(args, method),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=_pinned(1),
        )
    out, _ = ours.communicate()
    if ours.returncode:
        raise SystemExit(f"{method} {precision}: the benchmark process failed")
    row = json.loads(out.strip().splitlines()[-1])
    row["allocator"] = args.allocator
    row["compiled"] = args.compile
    if args.allocator == "jemalloc":
        row["malloc_conf"] = args.malloc_conf
    if ref is not None:
        ref_out, _ = ref.communicate()
        if ref.returncode:
            cmd_text = " ".join(_reference_cmd(args, method))
            raise SystemExit(f"the reference harness failed ({cmd_text})")
        row["reference"] = _reference_row(ref_out, args.warmup)
    return row


def table(rows: list[dict]) -> str:
    with_ref = any("reference" in r for r in rows)
    cols = [
        ("method", 6), ("precision", 10), ("allocator", 9), ("s/step", 6), ("user s", 6),
        ("sys s", 5), ("samples/s", 9), ("vs joint", 8), ("peak RSS GB", 11),
    ]  # fmt: skip
    if with_ref:
        cols += [
            ("ref", 12), ("ref s/step", 10), ("ref user s", 10), ("ref sys s", 9),
            ("ref samples/s", 13), ("ref RSS GB", 10), ("speed vs ref", 12), ("RSS vs ref", 10),
        ]  # fmt: skip

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.rjust(w) for v, (_, w) in zip(values, cols, strict=True)) + " |"

    joint = {
        (r["precision"], r["allocator"]): r["s_per_step"] for r in rows if r["method"] == "joint"
    }
    out = [line([c for c, _ in cols]), "|" + "|".join("-" * (w + 2) for _, w in cols) + "|"]
    for r in rows:
        base = joint.get((r["precision"], r["allocator"]))
        values = [
            r["method"], PRECISIONS[r["precision"]], r["allocator"], f"{r['s_per_step']:.1f}",
            f"{r['user_s_per_step']:.1f}", f"{r['sys_s_per_step']:.1f}",
            f"{r['samples_per_s']:.2f}", f"{r['s_per_step'] / base:.2f}x" if base else "-",
            f"{r['peak_rss_gb']:.2f}",
        ]  # fmt: skip
        ref = r.get("reference")
        if with_ref and ref:
            values += [
                ref["mode"], f"{ref['s_per_step']:.1f}", f"{ref['user_s_per_step']:.1f}",
                f"{ref['sys_s_per_step']:.1f}", f"{ref['samples_per_s']:.2f}",
                f"{ref['peak_rss_gb']:.2f}", f"{r['samples_per_s'] / ref['samples_per_s']:.2f}x",
                f"{r['peak_rss_gb'] / ref['peak_rss_gb']:.0%}",
            ]  # fmt: skip
        elif with_ref:
            values += ["-"] * 8
        out.append(line(values))
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["joint", "mla"])
    p.add_argument("--precisions", nargs="+", default=["32-true"], choices=list(PRECISIONS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--allocator", choices=["glibc", "jemalloc"], default="glibc")
    p.add_argument(
        "--malloc-conf",
        default="dirty_decay_ms:-1,muzzy_decay_ms:-1",
        help="jemalloc's MALLOC_CONF with --allocator jemalloc",
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile every encoder (inductor, CPU)"
    )
    p.add_argument("--reference", help="a local checkout of the public MLA code: run side by side")
    p.add_argument("--harness", default=HARNESS, help="the reference harness script")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        row = worker(
            args.methods[0], args.precisions[0], args.batch, args.warmup, args.steps, args.compile
        )
        print(json.dumps(row))
        return
    if args.reference is not None:
        if not os.path.isfile(os.path.join(args.reference, "main.py")):
            raise SystemExit(
                f"--reference {args.reference}: no main.py (expected a checkout of the MLA code)"
            )
        if not os.path.isfile(args.harness):
            raise SystemExit(f"--harness {args.harness}: not found")
        if len(os.sched_getaffinity(0)) < 2:
            raise SystemExit("--reference runs both side by side and needs 2 CPUs")
    rows = []
    for precision in args.precisions:
        for method in args.methods:
            rows.append(_run_one(args, method, precision))
            print(f"{method} {precision}: {json.dumps(rows[-1])}", flush=True)
    print()
    print(table(rows))
    if args.reference is None:
        print("\nno reference measured side by side: absolute figures only, no ratio")
    for r in rows:
        ref = r.get("reference")
        if r["method"] == "mla" and r["precision"] == "32-true" and ref:
            speed = r["samples_per_s"] / ref["samples_per_s"]
            memory = r["peak_rss_gb"] / ref["peak_rss_gb"]
            print(
                f"\nmla fp32 vs the reference side by side ({r['allocator']}): {speed:.2f}x the "
                f"speed (goal >= {GOAL['speed']}x: {'met' if speed >= GOAL['speed'] else 'missed'})"
                f", {memory:.0%} of its peak RSS (goal <= {GOAL['memory']:.0%}: "
                f"{'met' if memory <= GOAL['memory'] else 'missed'})"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
