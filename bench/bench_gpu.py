"""Training throughput on a CUDA GPU at CREMA-D shapes, against the ceiling of the same
encoders, and the data path that has to feed it.

1. **Ceiling**: the two ResNet-18 encoders alone (audio [1, 1024, 128], 3 frames [3, 224, 224];
   forward, then backward of their features' sum, plus the optimizer step), in the same
   precision: the convolution throughput of this GPU that any method's step is bounded by.
2. **Methods**: each method's training step through Lightning Fabric on the same encoders
   (batch already on the GPU, SGD as the reference): samples/s, the ratio to the ceiling, peak
   GPU memory, and the share of a step during which GPU kernels ran (torch.profiler).
3. **Feed**: the prepared cache of ``bench_data.py``'s CREMA-D-like media (fbank + 3 frames at
   224 with crop and flip) through ``make_loader`` with W workers, pinned memory and
   ``on_device`` (uint8 frames converted on the GPU): samples/s per W, to set beside step 2.

    python bench/bench_gpu.py [--methods joint ogm_ge mla pgm] [--batch 64] [--steps 20]
                              [--precision bf16-mixed] [--compile] [--feed 0 2 4 8]

Needs a CUDA device (a CPU run with ``--device cpu`` only checks that the script works).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

SHAPES = {"audio": [1, 1024, 128], "visual": [3, 3, 224, 224]}


def kernel_ms(step, steps: int, sync) -> float:
    """GPU kernel time per step (torch.profiler). NVML's utilisation is no use here: it averages
    over up to a second, more than the timed steps, and read 51-84% where kernels ran 97%."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        sync()
    events = prof.key_averages()
    return sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / (
        1e3 * steps
    )


def _timed(step, steps: int, warmup: int, sync) -> float:
    """Seconds per step over ``steps`` after ``warmup``, the device synchronised around."""
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def setup(method_name: str, args: argparse.Namespace):
    import torch
    from lightning_fabric import Fabric

    from unipair import methods
    from unipair.data.synthetic import load_synthetic
    from unipair.engine.config import OptimConfig
    from unipair.engine.optim import build_optimizer
    from unipair.engine.predict import on_device

    torch.manual_seed(0)
    n = max(args.batch * 2, 120)
    data = load_synthetic(shapes=SHAPES, num_classes=6, num_samples=n, seed=0,
                          val_fraction=0.1, test_fraction=0.1, lazy=True)  # fmt: skip
    model = {"width": 512, "encoders": {"*": {"name": "resnet18"}}}
    method = methods.create(method_name, data.spec, model)
    if args.compile:
        from unipair.models.encoders import compile_encoders

        compile_encoders(method)
    optim = OptimConfig(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4)
    optimizer = build_optimizer(method.parameter_groups(), optim)
    fabric = Fabric(accelerator=args.device, devices=1, precision=args.precision)
    module, optimizer = fabric.setup(method, optimizer)
    rows = list(range(min(args.batch, len(data.train))))
    batch = on_device(data.train.__getitems__(rows), fabric)
    return fabric, method, module, optimizer, batch


def ceiling(args: argparse.Namespace, sync) -> dict:
    """The encoders alone: forward, backward of the features' sum, optimizer step."""
    fabric, method, _, optimizer, batch = setup("joint", args)
    method.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with fabric.autocast():  # joint's encoders, without its fusion head
            loss = sum(z.float().sum() for z in method.modality_features(batch).values())
        fabric.backward(loss)
        optimizer.step()

    s = _timed(step, args.steps, args.warmup, sync)
    return {"what": "encoders alone", "samples_per_s": len(batch) / s, "s_per_step": s}


def method_row(name: str, args: argparse.Namespace, sync) -> dict:
    import torch

    from unipair import methods

    fabric, method, module, optimizer, batch = setup(name, args)
    step_handle = methods.TrainStep(module, optimizer, backward=fabric.backward)
    method.train()

    def step() -> None:
        method.training_step(batch, step_handle)
        step_handle.global_step += 1

    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    s = _timed(step, args.steps, args.warmup, sync)
    peak = torch.cuda.max_memory_allocated() / 1e9 if args.device == "cuda" else None
    # the share of the (unprofiled) step during which kernels ran; the rest is host-side gaps
    busy = kernel_ms(step, 10, sync) / (1e3 * s) if args.device == "cuda" else None
    return {"what": name, "samples_per_s": len(batch) / s, "s_per_step": s,
            "peak_gpu_gb": peak, "kernel_share": busy}  # fmt: skip


def feed(args: argparse.Namespace, sync) -> list[dict]:
    """samples/s from the prepared cache to the device, per number of workers."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_data import MODALITIES, make_media, write_manifest

    from unipair.data.prepared import prepare
    from unipair.data.registry import create
    from unipair.engine.predict import make_loader
    from unipair.engine.samplers import GlobalBatchSampler

    folder = Path(args.media)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        make_media(folder, 48)
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    repeated = write_manifest(folder / "manifest20.csv", rows, 20)
    options = {"modalities": MODALITIES, "val_fraction": 0.2, "test_fraction": 0.2}
    cache = prepare(repeated, folder / "prepared20", options, workers=8)
    train = create(str(cache), val_fraction=0.2, test_fraction=0.2).train
    device = torch.device(args.device)
    out = []
    for workers in args.feed:
        sampler = GlobalBatchSampler(len(train), args.batch, seed=0)
        loader = make_loader(train, sampler, workers, pin=args.device == "cuda")
        rates = []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            t0, n = time.perf_counter(), 0
            for batch in loader:
                n += len(batch.to(device, non_blocking=True).dequantize())
            sync()
            rates.append(n / (time.perf_counter() - t0))
        out.append({"workers": workers, "samples_per_s": statistics.median(rates[1:]),
                    "rows": len(train)})  # fmt: skip
        del loader
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["joint", "ogm_ge", "mla", "pgm"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--compile", action="store_true", help="compile the encoders (inductor)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune")
    p.add_argument("--feed", type=int, nargs="*", default=[0, 2, 4, 8], help="loader workers")
    p.add_argument("--media", default="/tmp/unipair-gpu-media")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device (--device cpu only checks the script)")
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    if args.device == "cuda":
        # off by default, as in unipair's trainer (and the reference's code)
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
        compiled = ", compiled" if args.compile else ""
        tuned = ", cuDNN autotuning" if args.cudnn_benchmark else ""
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.precision}, "
              f"batch {args.batch}{compiled}{tuned}")  # fmt: skip
    results: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                     "torch": torch.__version__, "precision": args.precision,
                     "batch": args.batch, "compile": args.compile}  # fmt: skip
    top = ceiling(args, sync)
    print(f"{'encoders alone':<16}{top['samples_per_s']:>10.0f} samples/s  (the ceiling)")
    rows = []
    for name in args.methods:
        row = method_row(name, args, sync)
        row["of_ceiling"] = row["samples_per_s"] / top["samples_per_s"]
        rows.append(row)
        busy = f"{row['kernel_share']:.0%}" if row["kernel_share"] is not None else "n/a"
        peak = f"{row['peak_gpu_gb']:.2f} GB" if row["peak_gpu_gb"] is not None else "n/a"
        print(f"{name:<16}{row['samples_per_s']:>10.0f} samples/s  {row['of_ceiling']:>5.0%} of "
              f"the ceiling  peak {peak}  kernels run {busy} of the step", flush=True)  # fmt: skip
    results.update(ceiling=top, methods=rows)
    if args.feed:
        results["feed"] = feed(args, sync)
        for r in results["feed"]:
            print(f"feed, {r['workers']} workers: {r['samples_per_s']:>8.0f} samples/s "
                  f"(prepared cache -> pinned -> {args.device}, converted there)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
