"""Speed and memory of the PAL4VST architecture (Swin-B + UPerNet, random weights) at 512x512.

Measures our implementation and, when mmsegmentation can be imported (see tools/make_mmseg_fixture.py
for a throwaway environment, or pass --mmseg-python), mmsegmentation's own model with the same
weights in the same run, and prints the ratio. Each measurement runs in its own process (so its
peak memory is its own) and the implementations alternate, so background load hits both alike.

    python benchmarks/detector.py                       # CPU, fp32, batch 1 and 8
    python benchmarks/detector.py --mmseg-python /tmp/mmseg-venv/bin/python
    python benchmarks/detector.py --device cuda --dtypes fp32 fp16 bf16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_forward(impl: str, device: str, dtype):
    """The network's forward (normalised images -> 1/4-scale logits) for 'ours' or 'mmseg'.

    Random weights: speed does not depend on their values, and the tests prove equal outputs.
    """
    import torch

    torch.manual_seed(0)
    if impl == "ours":
        from pal_core.models.swin_upernet import SwinUPerNet
        return SwinUPerNet().eval().to(device, dtype)  # the official config: Swin-B, window 12, UPerHead 512
    sys.path.insert(0, str(ROOT / "tools"))
    from make_mmseg_fixture import _model_cfg, build  # mmseg's own model, from its registry

    model = build(_model_cfg(128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 512, 512, 256)).eval().to(device, dtype)
    return lambda x: model.decode_head(model.backbone(x))


def _mmseg_available() -> bool:
    try:
        import mmseg  # noqa: F401
    except Exception:
        return False
    return True


def worker(impl: str, batch: int, device: str, dtype_name: str, iterations: int) -> dict:
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    forward = build_forward(impl, device, dtype)
    x = torch.randn(batch, 3, 512, 512, device=device, dtype=dtype)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        out = forward(x)  # warm-up (also builds the shift masks)
        for _ in range(iterations):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = forward(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"impl": impl, "batch": batch, "dtype": dtype_name, "device": device,
            "median_s": statistics.median(times), "images_per_s": batch / statistics.median(times),
            "peak_mib": peak, "output_shape": list(out.shape)}


def run_worker(python: str, impl: str, batch: int, args) -> dict | None:
    command = [python, __file__, "--worker", impl, "--batch", str(batch), "--device", args.device,
               "--dtype", args.worker_dtype, "--iterations", str(args.iterations), "--threads", str(args.threads)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(f"  {impl} batch {batch} failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--mmseg-python", default=None,
                        help="a Python that can import mmseg (default: this one, if it can)")
    parser.add_argument("--worker", choices=["ours", "mmseg"], help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", dest="worker_dtype", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.device, args.worker_dtype, args.iterations)))
        return

    mmseg_python = args.mmseg_python or (sys.executable if _mmseg_available() else None)
    print(f"Swin-B + UPerNet (PAL4VST), 512x512, device {args.device}, {args.threads} threads, "
          f"median of {args.iterations} runs; mmseg: {'yes' if mmseg_python else 'not importable, skipped'}")
    rows = []
    for dtype in args.dtypes:
        args.worker_dtype = dtype
        for batch in args.batches:
            ours = run_worker(mmseg_python or sys.executable, "ours", batch, args)
            theirs = run_worker(mmseg_python, "mmseg", batch, args) if mmseg_python else None
            rows.append((dtype, batch, ours, theirs))

    print("peak MiB: the process's peak resident memory on the CPU (model included), allocated memory on CUDA")
    print(f"\n| dtype | batch | ours s/batch | ours img/s | ours peak MiB | mmseg s/batch | mmseg peak MiB | speed ratio (mmseg time / ours) |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype, batch, ours, theirs in rows:
        if ours is None:
            continue
        mm = (f"{theirs['median_s']:.3f} | {theirs['peak_mib']:.0f} | {theirs['median_s'] / ours['median_s']:.2f}"
              if theirs else "- | - | -")
        print(f"| {dtype} | {batch} | {ours['median_s']:.3f} | {ours['images_per_s']:.2f} | "
              f"{ours['peak_mib']:.0f} | {mm} |")


if __name__ == "__main__":
    main()
