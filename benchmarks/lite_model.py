"""Speed of the shipped default detector (PAL-lite) per 512x512 image, end to end.

Times `Detector.predict` on one image (batch 1): preprocessing (quantise, antialiased bicubic resize
to 512, normalise), the network, the bilinear resize of the logits back and the softmax, exactly what
a user's first command does. Reports the median over many runs, and the network alone for reference:
as loaded (BatchNorm folded into the convolutions) and as saved (unfolded), timed alternately in the
same run, with the largest difference between their outputs.

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
    parser.add_argument("--precision", default="auto", help="auto (default), fp32, bf16, fp16")
    args = parser.parse_args(argv)

    import torch
    from pal_core import load_detector
    from pal_core.hub.loading import read_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    detector = load_detector(args.model, device=args.device, dtype=args.precision)
    image = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    network_input = detector._network_input([image[0]])

    def sync():
        if detector.device.type == "cuda":
            torch.cuda.synchronize()

    def end_to_end():
        detector.predict(image)
        sync()

    unfolded = read_checkpoint(args.model).model.eval().to(detector.device, detector.dtype)

    def network_only(model):
        def run():
            with torch.inference_mode():
                model(network_input)
            sync()
        return run

    total = timed(end_to_end, args.warmup, args.iterations)
    network, network_unfolded = [], []
    for _ in range(5):  # alternate, so background load hits both alike
        network += timed(network_only(detector.model), 1, args.iterations // 5 or 1)
        network_unfolded += timed(network_only(unfolded), 1, args.iterations // 5 or 1)
    with torch.inference_mode():
        difference = (detector.model(network_input).float() - unfolded(network_input).float()).abs().max().item()
    params = sum(p.numel() for p in detector.model.parameters())
    result = {
        "model": detector.info.source, "architecture": detector.info.architecture, "device": str(detector.device),
        "threads": torch.get_num_threads(), "image": f"{args.size}x{args.size}", "batch": 1,
        "median_ms": round(statistics.median(total), 1), "p90_ms": round(sorted(total)[int(0.9 * len(total))], 1),
        "precision": detector.precision, "network_median_ms": round(statistics.median(network), 1),
        "network_unfolded_median_ms": round(statistics.median(network_unfolded), 1),
        "folding_speedup": round(statistics.median(network_unfolded) / statistics.median(network), 2),
        "folded_vs_unfolded_max_abs_diff": difference, "parameters_m": round(params / 1e6, 2),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
