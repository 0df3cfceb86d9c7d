"""Speed of the shipped default detector (PAL-lite) per 512x512 image, end to end.

Times `Detector.predict` on one image (batch 1): preprocessing (quantise, antialiased bicubic resize
to 512, normalise), the network, the bilinear resize of the logits back and the softmax, exactly what
a user's first command does. Reports the median over many runs, and the network alone for reference.

    python benchmarks/lite_model.py                        # the shipped weights/pal_lite.safetensors, CPU
    python benchmarks/lite_model.py --model run/best.safetensors --threads 2 --size 768
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn, warmup: int, iterations: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="detector file or shipped name (default: the shipped default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--size", type=int, default=512, help="side of the square test image (default 512)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)

    import torch
    from pal_core import load_detector

    if args.threads:
        torch.set_num_threads(args.threads)
    detector = load_detector(args.model, device=args.device)
    image = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    network_input = detector._network_input([image[0]])

    def sync():
        if detector.device.type == "cuda":
            torch.cuda.synchronize()

    def end_to_end():
        detector.predict(image)
        sync()

    def network_only():
        with torch.inference_mode():
            detector.model(network_input)
        sync()

    total = timed(end_to_end, args.warmup, args.iterations)
    network = timed(network_only, args.warmup, args.iterations)
    params = sum(p.numel() for p in detector.model.parameters())
    result = {
        "model": detector.info.source, "architecture": detector.info.architecture, "device": str(detector.device),
        "threads": torch.get_num_threads(), "image": f"{args.size}x{args.size}", "batch": 1,
        "median_ms": round(statistics.median(total), 1), "p90_ms": round(sorted(total)[int(0.9 * len(total))], 1),
        "network_median_ms": round(statistics.median(network), 1), "parameters_m": round(params / 1e6, 2),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
