"""Speed, memory and mask agreement of the PAL4VST architecture (Swin-B + UPerNet) at 512x512, ours in each
precision against mmsegmentation's own model in fp32, in one run.

Both run the same random weights: when mmsegmentation can be imported (see tools/make_mmseg_fixture.py
for a throwaway environment, or pass --mmseg-python), mmseg builds and randomises the model and ours is
converted from its state dict, exactly as a user's checkpoint would be; without mmseg, ours is random.
The input is a shipped example picture (workflows/input/dog_sdxl_turbo.jpg) preprocessed as the
detector does, repeated to the batch size. Each measurement runs in its own process (so its peak memory
is its own), and the rows alternate within each batch size, so background load hits all alike.

A row is IMPL:PRECISION[+compile], e.g. `mmseg:fp32`, `ours:bf16`, `ours:auto+compile`; "auto" is
what `load_detector` picks on this machine (printed). Mask agreement compares the probability maps of
every example picture (workflows/input/*.jpg, at 512x512; computed in the first batch size's process)
with the reference row's (mmseg fp32, else ours fp32): all pixels, and the pixels where the reference
is decided (not within 0.1 of the 0.5 threshold; random weights put many pixels near it).

Rows below fp32 also show what the precision guard (`pal_core.detect.detector.PrecisionGuard`, threshold
0.5; precision auto runs with it, an explicit bf16/fp16 without) does with them: the largest share of undecided pixels over the pictures, how many
pictures it sends back to fp32, the mask agreement after that (a picture sent back gets ours fp32's
map, which the guard's float32 copy computes), and the time per batch with the guard: the row's own
time, plus ours fp32's time of the same batch size in this run when the guard sends the timed
picture back (the batch repeats one picture, so all its images go back or none).

    python benchmarks/detector.py --mmseg-python /tmp/mmseg-venv/bin/python          # CPU rows
    python benchmarks/detector.py --device cuda --batches 1 8 32 \\
        --rows ours:fp32 ours:fp16 ours:bf16 ours:auto                                 # a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "workflows" / "input" / "dog_sdxl_turbo.jpg"  # timed, and the first of PICTURES
PICTURES = [IMAGE] + sorted(p for p in (ROOT / "workflows" / "input").glob("*.jpg") if p != IMAGE)
CPU_ROWS = ["mmseg:fp32", "ours:fp32", "ours:bf16", "ours:auto", "ours:auto+compile"]
CUDA_ROWS = ["mmseg:fp32", "ours:fp32", "ours:fp16", "ours:bf16", "ours:auto"]
# The official PAL4VST config: Swin-B (embed 128, depths 2-2-18-2, window 12) + UPerHead 512, FCN aux 256.
MMSEG_CFG = (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 512, 512, 256)


def _mmseg_tools():
    sys.path.insert(0, str(ROOT / "tools"))
    import make_mmseg_fixture  # installs the mmcv._ext stand-in, imports mmseg

    return make_mmseg_fixture


def make_weights(path: str) -> None:
    """mmseg builds the official architecture and randomises every weight (seeded); saved as a state dict."""
    import torch

    tools = _mmseg_tools()
    torch.manual_seed(0)
    model = tools.build(tools._model_cfg(*MMSEG_CFG))
    with torch.no_grad():
        tools.randomise(model, 0)
    torch.save(model.state_dict(), path)


def build_forward(impl: str, device, dtype, compile: bool, weights: str | None):
    """The network's forward (normalised images -> 1/4-scale logits) for 'ours' or 'mmseg'."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True) if weights else None
    if impl == "ours":
        from pal_core.models.fusion import fuse_conv_bn
        from pal_core.models.swin_upernet import SwinUPerNet, from_mmseg_checkpoint

        torch.manual_seed(0)
        model = from_mmseg_checkpoint(state) if state is not None else SwinUPerNet()
        model.eval()
        fuse_conv_bn(model)  # as load_detector does
        model.to(device, dtype)
        return torch.compile(model) if compile else model
    tools = _mmseg_tools()
    model = tools.build(tools._model_cfg(*MMSEG_CFG))
    if state is not None:
        model.load_state_dict(state)
    model.eval().to(device, dtype)
    return lambda x: model.decode_head(model.backbone(x))


def worker(args) -> dict:
    import torch
    import torch.nn.functional as F

    from pal_core.detect.devices import precision_name, resolve_dtype
    from pal_core.models.swin_upernet import SwinUPerNet

    impl, rest = args.worker.split(":")
    precision, _, extra = rest.partition("+")
    device = torch.device(args.device)
    dtype = resolve_dtype(precision, device, low_precision=SwinUPerNet.auto_low_precision)
    forward = build_forward(impl, device, dtype, extra == "compile", args.weights)
    x = torch.load(args.input, weights_only=True)[:1].to(device).repeat(args.batch, 1, 1, 1).to(dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        start = time.perf_counter()
        out = forward(x)  # first call: builds shift masks, compiles with +compile
        sync()
        first = time.perf_counter() - start
        for _ in range(args.iterations):
            start = time.perf_counter()
            out = forward(x)
            sync()
            times.append(time.perf_counter() - start)

    def probability(logits):
        logits = logits[:1].float()
        return torch.sigmoid(F.interpolate(logits[:, 1:2] - logits[:, 0:1], size=x.shape[2:], mode="bilinear",
                                           align_corners=False))[0, 0].cpu()

    if args.prob_out:  # the maps for mask agreement: the timed picture's, then the other pictures'
        probs = [probability(out)]
        with torch.inference_mode():
            for picture in torch.load(args.input, weights_only=True).split(1)[1:] if args.pictures else []:
                probs.append(probability(forward(picture.to(device, dtype))))
        torch.save(probs, args.prob_out)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"row": args.worker, "precision": precision_name(dtype), "batch": args.batch, "first_s": first,
            "median_s": statistics.median(times or [first]), "images_per_s": args.batch / statistics.median(times or [first]),
            "peak_mib": peak}


def run_worker(python: str, row: str, batch: int, args, workdir: Path, pictures: bool) -> dict | None:
    prob_out = workdir / f"{row.replace(':', '_').replace('+', '_')}_b{batch}.pt"
    command = [python, __file__, "--worker", row, "--batch", str(batch), "--device", args.device,
               "--iterations", str(args.iterations), "--threads", str(args.threads), "--input", str(workdir / "x.pt"),
               "--prob-out", str(prob_out)] + (["--pictures"] if pictures else [])
    if args.weights:
        command += ["--weights", args.weights]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(f"  {row} batch {batch} failed: {result.stderr.strip().splitlines()[-3:]}", file=sys.stderr)
        return None
    record = json.loads(result.stdout.strip().splitlines()[-1])
    record["prob"] = str(prob_out)
    print(f"  {row} batch {batch}: {record['median_s']:.3f} s/batch ({record['precision']}), first call "
          f"{record['first_s']:.1f} s, process {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return record


def agreement(reference: list, other: list) -> tuple[float, float, float]:
    """Over all maps: (share of equal mask pixels, the same where the reference is decided, max probability
    difference)."""
    import torch

    reference, other = torch.stack(reference), torch.stack(other)
    equal = (reference > 0.5) == (other > 0.5)
    decided = (reference - 0.5).abs() > 0.1
    return float(equal.float().mean()), float(equal[decided].float().mean()), float((reference - other).abs().max())


def guarded(probs: list, fp32_probs: list) -> tuple[list, list[float], list[bool]]:
    """The maps after the Detector's precision guard at threshold 0.5: those it sends back are fp32's.
    Also each map's undecided share and whether it went back."""
    from pal_core.detect.detector import PrecisionGuard

    guard = PrecisionGuard()
    shares = [guard.undecided(prob, 0.5) for prob in probs]
    back = [share > guard.share for share in shares]
    return [exact if again else prob for prob, exact, again in zip(probs, fp32_probs, back)], shares, back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", nargs="+", default=None, help=f"default: {' '.join(CPU_ROWS)} (CUDA: {' '.join(CUDA_ROWS)})")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--iterations", type=int, default=2,
                        help="timed runs after the first call (0: time the first call only, to save time on a slow machine)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--mmseg-python", default=None, help="a Python that can import mmseg (default: this one, if it can)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--prob-out", help=argparse.SUPPRESS)
    parser.add_argument("--pictures", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help="file for the mmseg-made random weights: reused when it exists, else made "
                                          "there (default: a temporary folder)")
    parser.add_argument("--make-weights", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    if args.make_weights:
        make_weights(args.make_weights)
        return
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from pal_core.detect.devices import cpu_has_bf16_units, resolve_device, resolve_dtype
    from pal_core.imageio import read_image
    from pal_core.detect.preprocess import Preprocess

    mmseg_python = args.mmseg_python or (sys.executable if _importable("mmseg") else None)
    rows = args.rows or (CUDA_ROWS if args.device.startswith("cuda") else CPU_ROWS)
    if not mmseg_python:
        rows = [r for r in rows if not r.startswith("mmseg:")]
    device = resolve_device(args.device)
    workdir = Path(tempfile.mkdtemp(prefix="pal_bench_"))
    torch.save(torch.cat([Preprocess(input_size=512)(read_image(p).unsqueeze(0)) for p in PICTURES]), workdir / "x.pt")
    if not mmseg_python:
        args.weights = None
    elif args.weights is None or not Path(args.weights).exists():  # seeded: the same weights every time
        args.weights = args.weights or str(workdir / "weights.pth")
        subprocess.run([mmseg_python, __file__, "--make-weights", args.weights], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    auto = resolve_dtype("auto", device)
    cpu = _cpu_name()
    print(f"Swin-B + UPerNet (PAL4VST), 512x512, device {device}{' (' + cpu + ')' if device.type == 'cpu' else ''}, "
          f"{args.threads} threads, " + (f"median of {args.iterations} runs after a first call" if args.iterations
                                        else "the first call only") + f"; auto = {auto} "
          f"(CPU bf16 units: {cpu_has_bf16_units()}); weights: {'mmseg-made random' if args.weights else 'random'}; "
          f"load average before: {os.getloadavg()[0]:.1f}", flush=True)

    results = []
    for batch in args.batches:
        for row in rows:
            python = mmseg_python if row.startswith("mmseg:") else (mmseg_python or sys.executable)
            record = run_worker(python, row, batch, args, workdir, pictures=batch == args.batches[0])
            if record is not None:
                results.append(record)
    print(f"load average after: {os.getloadavg()[0]:.1f}")

    reference_row = "mmseg:fp32" if any(r["row"] == "mmseg:fp32" for r in results) else "ours:fp32"
    maps = {r["row"]: torch.load(r["prob"], weights_only=True) for r in results if r["batch"] == args.batches[0]}
    print("\npeak MiB: the process's peak resident memory on the CPU (model included), allocated memory on CUDA")
    print(f"mask agreement: with {reference_row} over the {len(PICTURES)} example pictures at 512x512, all pixels / "
          "decided pixels (max probability difference); guard: largest undecided share, pictures sent back to fp32\n")
    print("| row | precision | batch | s/batch | img/s | first call s | peak MiB | speed vs mmseg fp32 "
          "| mask agreement | guard | s/batch with guard | speed with guard | mask agreement with guard |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for record in results:
        same_batch = {r["row"]: r for r in results if r["batch"] == record["batch"]}
        base, ours32 = same_batch.get("mmseg:fp32"), same_batch.get("ours:fp32")
        speed = f"{base['median_s'] / record['median_s']:.2f}x" if base else "-"
        agree = guard = guarded_time = guarded_speed = guarded_agree = "-"
        probs = maps.get(record["row"])
        if probs is not None and reference_row in maps and record["row"] != reference_row:
            agree = "{:.2%} / {:.2%} ({:.3f})".format(*agreement(maps[reference_row], probs))
        if record["precision"] != "fp32" and probs is not None and "ours:fp32" in maps:
            after, shares, back = guarded(probs, maps["ours:fp32"])
            guard = f"{max(shares):.2%}, {sum(back)}/{len(back)} back"
            if reference_row in maps:
                guarded_agree = "{:.2%} / {:.2%} ({:.3f})".format(*agreement(maps[reference_row], after))
            if ours32 is not None:  # the timed picture is the first
                seconds = record["median_s"] + (ours32["median_s"] if back[0] else 0.0)
                guarded_time = f"{seconds:.3f}"
                guarded_speed = f"{base['median_s'] / seconds:.2f}x" if base else "-"
        print(f"| {record['row']} | {record['precision']} | {record['batch']} | {record['median_s']:.3f} | "
              f"{record['images_per_s']:.2f} | {record['first_s']:.1f} | {record['peak_mib']:.0f} | {speed} | "
              f"{agree} | {guard} | {guarded_time} | {guarded_speed} | {guarded_agree} |")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except Exception:
        return False
    return True


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
