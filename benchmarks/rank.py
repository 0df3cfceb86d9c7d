"""Throughput and memory of `pal rank` (pal_core.rank.ranking.rank_images) on folders of mixed-size images.

1. Images/s for 200 images of mixed sizes and formats at batch sizes 1, 8 and 32 (decoding in 2
   background threads), against the official script's way: one image at a time, decoded in the loop
   (batch 1, no decoding threads).
2. Peak memory when ranking 200 vs 2,000 images: it must not grow with the number of images.

Each measurement runs in its own process, so its peak memory (ru_maxrss) is its own. The model is the
shipped default when installed, else --model, else a small random Swin + UPerNet (speed only: the
numbers it gives are not the shipped model's). Timings exclude loading the model.

    python benchmarks/rank.py                      # CPU
    python benchmarks/rank.py --device cuda        # GPU (add --dtype fp16)
    python benchmarks/rank.py --model pal4vst.pth  # another model
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = [(512, 512), (768, 512), (640, 960), (1024, 1024), (384, 640), (896, 640)]  # (height, width)


def make_images(folder: Path, count: int, sizes, seed: int = 0) -> None:
    """Smooth random images (compressible like real ones) in PNG, JPEG and WebP, sizes cycling."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        small = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
        subfolder = folder / f"{i // 100:03d}"  # 100 per folder, as generation runs often leave them
        subfolder.mkdir(exist_ok=True)
        image.save(subfolder / f"img{i:05d}.{('png', 'jpg', 'webp')[i % 3]}")


def small_random_model(path: Path) -> str:
    """A small Swin + UPerNet with random weights, for when no real model is available."""
    import torch

    from pal_core import DetectorCheckpoint, save_detector_file
    from pal_core.models.swin_upernet import SwinUPerNet, SwinUPerNetConfig

    torch.manual_seed(0)
    config = SwinUPerNetConfig(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
                               head_channels=64)
    save_detector_file(DetectorCheckpoint(SwinUPerNet(config).eval(), "small-random", source="benchmark"), path)
    return str(path)


def choose_model(requested: str | None, scratch: Path) -> tuple[str | None, str]:
    """(model source, what it is): the shipped default, else --model, else a small random network."""
    from pal_core import ModelNotFoundError
    from pal_core.hub.loading import resolve_source

    try:
        return None, f"shipped default ({resolve_source(None).name})"
    except ModelNotFoundError:
        pass
    if requested:
        return requested, f"--model {requested} (shipped default not installed)"
    return small_random_model(scratch / "small.safetensors"), (
        "small random Swin+UPerNet (embed 32, depths 2-2-2-2, head 64; shipped default not installed)")


def worker(args: argparse.Namespace) -> dict:
    """One run of rank_images, in this process: images/s and peak memory."""
    import torch

    from pal_core import load_detector
    from pal_core.rank.ranking import RankSettings, rank_images

    if args.threads:
        torch.set_num_threads(args.threads)
    detector = load_detector(args.model, device=args.device, dtype=args.dtype, input_size=args.input_size,
                             batch_size=args.batch_size)
    after_load = _peak_mib(args.device)
    records = Path(args.records)
    settings = RankSettings(batch_size=args.batch_size, workers=args.workers)
    start = time.perf_counter()
    summary = rank_images(detector, [args.folder], records, settings)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"images": summary.scored, "failed": summary.failed, "seconds": seconds,
            "images_per_s": summary.scored / seconds, "after_load_mib": after_load, "peak_mib": _peak_mib(args.device)}


def _peak_mib(device: str) -> float:
    if device.startswith("cuda"):
        import torch
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(options: dict, scratch: Path) -> dict:
    records = scratch / f"records-{time.monotonic_ns()}.jsonl"
    argv = [sys.executable, __file__, "--worker", "--records", str(records)]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=_env())
    if result.returncode != 0:
        raise RuntimeError(f"worker failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _env() -> dict:
    import os
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--memory-counts", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--memory-input-size", type=int, default=64,
                        help="network size for the memory runs (small: they measure growth, not speed)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    # worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="pal-rank-bench-") as tmp:
        scratch = Path(tmp)
        model, model_text = choose_model(args.model, scratch)
        common = {"model": model, "device": args.device, "dtype": args.dtype, "threads": args.threads or None}
        print(f"model: {model_text}; device {args.device}; precision {args.dtype or 'auto'}")
        if not args.skip_speed:
            speed_table(args, common, scratch)
        if not args.skip_memory:
            memory_table(args, common, scratch)


def speed_table(args, common: dict, scratch: Path) -> None:
    folder = scratch / "speed"
    make_images(folder, args.images, SIZES)
    print(f"\nSpeed: {args.images} images, sizes {', '.join(f'{w}x{h}' for h, w in SIZES)} (PNG/JPEG/WebP), "
          f"network at {args.input_size}x{args.input_size}")
    runs = [("official-style loop (batch 1, decode in loop)", 1, 0)]
    runs += [(f"pal rank batch {b} (2 decode threads)", b, 2) for b in args.batch_sizes]
    rows = []
    for label, batch, workers in runs:
        result = run_worker({**common, "folder": folder, "input_size": args.input_size, "batch_size": batch,
                             "workers": workers}, scratch)
        rows.append((label, result))
    base = rows[0][1]["images_per_s"]
    print(f"{'run':48} {'images/s':>9} {'vs loop':>8} {'seconds':>8} {'peak MiB':>9}")
    for label, r in rows:
        print(f"{label:48} {r['images_per_s']:9.2f} {r['images_per_s'] / base:7.2f}x {r['seconds']:8.1f} "
              f"{r['peak_mib']:9.0f}")


def memory_table(args, common: dict, scratch: Path) -> None:
    print(f"\nMemory: batch 8, 2 decode threads, 256x256 images, network at {args.memory_input_size}x"
          f"{args.memory_input_size}")
    rows = []
    for count in args.memory_counts:
        folder = scratch / f"memory{count}"
        make_images(folder, count, [(256, 256), (256, 320)], seed=1)
        result = run_worker({**common, "folder": folder, "input_size": args.memory_input_size, "batch_size": 8,
                             "workers": 2}, scratch)
        rows.append((count, result))
    print(f"{'images':>7} {'after load MiB':>15} {'peak MiB':>9} {'growth MiB':>11} {'images/s':>9}")
    for count, r in rows:
        print(f"{count:7d} {r['after_load_mib']:15.0f} {r['peak_mib']:9.0f} {r['peak_mib'] - r['after_load_mib']:11.1f} "
              f"{r['images_per_s']:9.1f}")
    (small, a), (large, b) = rows[0], rows[-1]
    print(f"peak memory at {large} vs {small} images: {b['peak_mib'] / a['peak_mib']:.3f}x "
          f"(growth after load: {a['peak_mib'] - a['after_load_mib']:.1f} -> {b['peak_mib'] - b['after_load_mib']:.1f} MiB)")


if __name__ == "__main__":
    main()
