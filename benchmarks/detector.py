"""Speed, memory and mask agreement of the PAL4VST architecture (Swin-B + UPerNet) at 512x512 in each
precision, on models of two kinds: random weights (probabilities crowd around 0.5, the guard's worst case)
and a model as confident as a trained one (benchmarks/confident_model.py makes one without the official
file), plus mmsegmentation's own model in fp32 when it can be imported.

Rows, per model: `fp32`, `bf16` (unguarded: raw speed) and `auto` (`fp16` on CUDA; any row + `+compile`
for torch.compile, e.g. `fp32+compile`, whose first call compiles), the real Detector that
`load_detector(dtype="auto")` returns (bf16 with the precision guard and its cost bound on a CPU with bf16
units, else fp32; on CUDA bf16 or fp16). Timing: our rows run in this interpreter, one Detector each, over
the same pictures (the shipped examples, workflows/input/*.jpg, and --pictures from a folder), in batches
of each --batches size; each batch goes through every row before the next (the order rotates), so
background load hits all alike; wall and CPU seconds (all threads of the process) are both reported. A new auto Detector is made for each repeat: its cost bound counts from
the start of a run, as it would for a user. Reported per row: seconds per image (median over repeats),
images/s, speed against our fp32 (and mmseg fp32), the share of images the guard tried in bf16 and sent
back to fp32 (and ran in fp32 directly), the mask agreement with our fp32 (all pixels, worst picture) and
the largest probability difference. Load averages are printed before and after.

Peak memory (--memory): each row again in its own process (so the peak is its own: resident memory on the
CPU, allocated on CUDA), one call on --memory-batch copies of the first picture, models included
(auto's float32 copy of the weights too).

mmseg rows: `--mmseg-python PY` (a Python that imports mmseg; see tools/make_mmseg_fixture.py) runs
mmseg's model in fp32 on the random model's weights, which mmseg makes (seeded) and ours converts; that
row alone runs in PY, in a process of its own, importing nothing of ours. Any row that fails makes the
benchmark exit with status 1 after the table, with the failing command's error.

    python benchmarks/detector.py --models random /root/.cache/pal-bench/swin_confident.safetensors \\
        --pictures /root/.cache/pal-bench/data/images/val --limit 5 --batches 1 8 --memory
    python benchmarks/detector.py --device cuda --batches 1 8 32 --rows fp32 fp16 bf16 auto
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
sys.path.insert(0, str(ROOT))
EXAMPLES = ROOT / "workflows" / "input"
CPU_ROWS = ["fp32", "bf16", "auto"]
CUDA_ROWS = ["fp32", "fp16", "bf16", "auto"]
# The official PAL4VST config: Swin-B (embed 128, depths 2-2-18-2, window 12) + UPerHead 512, FCN aux 256.
MMSEG_CFG = (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 512, 512, 256)
THRESHOLD = 0.5


class RowFailed(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------
# Models


def _mmseg_tools():
    sys.path.insert(0, str(ROOT / "tools"))
    import make_mmseg_fixture  # installs the mmcv._ext stand-in, imports mmseg

    return make_mmseg_fixture


def make_mmseg_weights(path: str) -> None:
    """(In the mmseg interpreter) mmseg builds the official architecture and randomises every weight (seeded)."""
    import torch

    tools = _mmseg_tools()
    torch.manual_seed(0)
    model = tools.build(tools._model_cfg(*MMSEG_CFG))
    with torch.no_grad():
        tools.randomise(model, 0)
    torch.save(model.state_dict(), path)


def random_model_file(workdir: Path, mmseg_python: str | None) -> Path:
    """The random model: mmseg-made and converted when mmseg is there (so mmseg's row runs the same
    weights), else our own network's random initialisation (seeded), as a detector file."""
    import torch

    from pal_core.hub.checkpoint import DetectorCheckpoint, save_detector_file
    from pal_core.models.swin_upernet import SwinUPerNet, from_mmseg_checkpoint

    if mmseg_python:
        state = workdir / "mmseg_random.pth"
        _run([mmseg_python, __file__, "--make-mmseg-weights", str(state)], "making mmseg's random weights")
        model = from_mmseg_checkpoint(torch.load(state, map_location="cpu", weights_only=True))
        source = "mmseg-made random weights"
    else:
        torch.manual_seed(0)
        model, source = SwinUPerNet(), "random initialisation (seeded)"
    path = workdir / "random.safetensors"
    save_detector_file(DetectorCheckpoint(model.eval(), "random", source=source), path)
    return path


def _run(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RowFailed(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{result.stderr.strip()}")
    return result.stdout


# ----------------------------------------------------------------------------------------------
# Pictures and maps


def pictures(folder: str | None, limit: int):
    """The example pictures, then up to `limit` pictures of `folder` (sorted; searched recursively)."""
    from pal_core.imageio import list_images, read_image

    paths = sorted(EXAMPLES.glob("*.jpg"))
    if folder:
        paths += sorted(list_images([folder]))[:limit]
    return [p.name for p in paths], [read_image(p) for p in paths]


def agreement(reference: list, other: list) -> tuple[float, float, float]:
    """(share of equal mask pixels over all maps, the worst map's share, largest probability difference)."""
    equal = [((a > THRESHOLD) == (b > THRESHOLD)).float() for a, b in zip(reference, other)]
    total = sum(float(e.sum()) for e in equal) / sum(e.numel() for e in equal)
    worst = min(float(e.mean()) for e in equal)
    return total, worst, max(float((a - b).abs().max()) for a, b in zip(reference, other))


# ----------------------------------------------------------------------------------------------
# Timing: our rows, interleaved in this process


def detector_for(model: Path, row: str, device: str, batch: int):
    """A row is a precision (fp32, bf16, fp16, auto), optionally with +compile (torch.compile)."""
    from pal_core.hub.loading import load_detector

    precision, _, extra = row.partition("+")
    if extra not in ("", "compile"):
        raise ValueError(f"row {row!r}: the only suffix is +compile")
    return load_detector(model, device=device, dtype=precision, input_size=512, batch_size=batch,
                         compile=extra == "compile")


def time_rows(model: Path, rows: list[str], frames: list, batches: list[int], repeats: int, device: str) -> dict:
    """{(row, batch): {"seconds": [per image, per repeat], "cpu": [...], "maps": first run's maps, "ledger": [...]}}.

    Interleaved as finely as the rows allow: each batch of pictures goes through every row (in an order
    that rotates) before the next batch, so load that comes and goes within a run hits all rows alike.
    Each repeat makes new Detectors: auto's cost bound counts from the start of a run, as for a user."""
    results = {}
    for batch in batches:
        for repeat in range(repeats):
            detectors = {row: detector_for(model, row, device, batch) for row in rows}
            spent = {row: [0.0, 0.0] for row in rows}
            maps = {row: [] for row in rows}
            for n, start in enumerate(range(0, len(frames), batch)):
                chunk = list(frames[start:start + batch])
                turn = (n + repeat) % len(rows)
                for row in rows[turn:] + rows[:turn]:
                    wall, cpu = time.perf_counter(), time.process_time()
                    maps[row] += detectors[row].predict(chunk, threshold=THRESHOLD)
                    _synchronize(device)
                    spent[row][0] += time.perf_counter() - wall
                    spent[row][1] += time.process_time() - cpu
            for row, detector in detectors.items():
                entry = results.setdefault((row, batch), {"seconds": [], "cpu": [], "ledger": [],
                                                          "precision": detector.precision})
                entry["seconds"].append(spent[row][0] / len(frames))
                entry["cpu"].append(spent[row][1] / len(frames))
                entry.setdefault("maps", maps[row])
                ledger = detector.guard_counts
                entry["ledger"].append((ledger.checked, ledger.recomputed, ledger.direct, detector.guarded))
                summary = ledger.summary(detector.guard, detector.precision) if detector.guarded else ""
                print(f"  {model.stem} {row} batch {batch} repeat {repeat + 1}: {entry['seconds'][-1]:.2f} s/image, "
                      f"CPU {entry['cpu'][-1]:.2f} s/image ({detector.precision}{', ' + summary if summary else ''}; "
                      f"load {_load()})", file=sys.stderr, flush=True)
    return results


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# Memory and mmseg: one process per row


def worker(args) -> dict:
    """One call of one row in this process; its peak memory and time."""
    import torch

    device = torch.device(args.device)
    if args.worker.startswith("mmseg:"):  # the mmseg interpreter: nothing of ours is imported
        return mmseg_worker(args, device)
    from pal_core.imageio import read_image

    frames = [read_image(args.picture)] * args.batch
    detector = detector_for(Path(args.model), args.worker, args.device, args.batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    detector.predict(frames, threshold=THRESHOLD)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": _peak_mib(device)}


def mmseg_worker(args, device) -> dict:
    """mmseg's model in fp32 on the preprocessed pictures saved by the main process; their probability maps."""
    import torch
    import torch.nn.functional as F

    tools = _mmseg_tools()
    model = tools.build(tools._model_cfg(*MMSEG_CFG))
    model.load_state_dict(torch.load(args.model, map_location="cpu", weights_only=True))
    model.eval().to(device)
    inputs = torch.load(args.picture, weights_only=True)
    maps, times = [], []
    with torch.inference_mode():
        for x, (height, width) in zip(inputs["x"], inputs["sizes"]):
            start = time.perf_counter()
            logits = model.decode_head(model.backbone(x[None].to(device))).float()
            times.append(time.perf_counter() - start)
            score = F.interpolate(logits[:, 1:2] - logits[:, 0:1], size=(height, width), mode="bilinear",
                                  align_corners=False)
            maps.append(torch.sigmoid(score)[0, 0].cpu())
    torch.save(maps, args.maps_out)
    return {"seconds": statistics.median(times), "peak_mib": _peak_mib(device)}


def _peak_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(python: str, row: str, model: str, picture: str, batch: int, args, maps_out: str = "") -> dict:
    command = [python, __file__, "--worker", row, "--model", model, "--picture", picture, "--batch", str(batch),
               "--device", args.device, "--threads", str(args.threads), "--maps-out", maps_out]
    return json.loads(_run(command, f"row {row} (batch {batch})").strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["random"],
                        help="'random' and/or detector files (e.g. benchmarks/confident_model.py's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", nargs="+", default=None, help=f"default: {' '.join(CPU_ROWS)} (CUDA: {' '.join(CUDA_ROWS)})")
    parser.add_argument("--batches", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each row over all pictures, per batch size")
    parser.add_argument("--pictures", default=None, help="a folder of more pictures (e.g. a `pal prepare-data` split)")
    parser.add_argument("--limit", type=int, default=5, help="pictures taken from --pictures")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--memory", action="store_true", help="also each row's peak memory, in a process of its own")
    parser.add_argument("--memory-batch", type=int, default=8)
    parser.add_argument("--mmseg-python", default=None, help="a Python that can import mmseg: adds mmseg's fp32 row")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--picture", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--maps-out", help=argparse.SUPPRESS)
    parser.add_argument("--make-mmseg-weights", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    if args.make_mmseg_weights:
        make_mmseg_weights(args.make_mmseg_weights)
        return
    if args.worker:
        print(json.dumps(worker(args)))
        return
    sys.exit(benchmark(args))


def benchmark(args) -> int:
    import torch

    from pal_core.detect.devices import cpu_has_bf16_units, resolve_device, resolve_dtype
    from pal_core.detect.preprocess import Preprocess

    device = resolve_device(args.device)
    rows = args.rows or (CUDA_ROWS if device.type == "cuda" else CPU_ROWS)
    workdir = Path(tempfile.mkdtemp(prefix="pal_bench_"))
    names, frames = pictures(args.pictures, args.limit)
    failures: list[str] = []
    print(f"Swin-B + UPerNet (PAL4VST), 512x512, device {device}"
          f"{' (' + _cpu_name() + ')' if device.type == 'cpu' else ''}, {args.threads} threads; auto = "
          f"{resolve_dtype('auto', device)} (CPU bf16 units: {cpu_has_bf16_units()}); {len(frames)} pictures "
          f"({', '.join(names)}); batches {args.batches}, {args.repeats} repeats; load average before "
          f"{_load()}", flush=True)

    tables = []
    for name in args.models:
        try:
            model = random_model_file(workdir, args.mmseg_python) if name == "random" else Path(name)
            timed = time_rows(model, rows, frames, args.batches, args.repeats, args.device)
        except Exception as error:  # noqa: BLE001 - reported, and the run fails at the end
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        mmseg = None
        if args.mmseg_python and name == "random":
            try:
                x = [Preprocess(input_size=512)(f[None])[0] for f in frames]
                torch.save({"x": x, "sizes": [tuple(f.shape[:2]) for f in frames]}, workdir / "x.pt")
                maps_out = str(workdir / "mmseg_maps.pt")
                mmseg = run_worker(args.mmseg_python, "mmseg:fp32", str(workdir / "mmseg_random.pth"),
                                   str(workdir / "x.pt"), 1, args, maps_out)
                mmseg["maps"] = torch.load(maps_out, weights_only=True)
            except RowFailed as error:
                failures.append(str(error))
        memory = {}
        if args.memory:
            for row in rows:
                try:
                    memory[row] = run_worker(sys.executable, row, str(model), str(EXAMPLES / names[0]),
                                             args.memory_batch, args)
                except RowFailed as error:
                    failures.append(str(error))
        tables.append(table(model.stem if name != "random" else "random", timed, mmseg, memory, rows, names, args))
    print(f"load average after: {_load()}\n")
    print("\n\n".join(tables))
    for failure in failures:
        print(f"\nFAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def table(model: str, timed: dict, mmseg: dict | None, memory: dict, rows: list[str], names: list[str], args) -> str:
    from pal_core.detect.guard import PrecisionGuard

    fp32_maps = next((e["maps"] for (row, _), e in timed.items() if row == "fp32"), None)
    lines = [f"model {model}: undecided share (within 0.1 of {THRESHOLD}) of fp32's maps: "
             + (", ".join(f"{PrecisionGuard().undecided(m, THRESHOLD):.2%}" for m in fp32_maps) if fp32_maps else "-")
             + "; mask area: " + (", ".join(f"{float((m > THRESHOLD).float().mean()):.2%}" for m in fp32_maps)
                                  if fp32_maps else "-")]
    if mmseg is not None:
        total, worst, diff = agreement(mmseg["maps"], fp32_maps) if fp32_maps else (0, 0, 0)
        lines.append(f"mmseg fp32: {mmseg['seconds']:.2f} s/image (batch 1, median), peak {mmseg['peak_mib']:.0f} MiB; "
                     f"ours fp32 vs mmseg: {total:.4%} of mask pixels equal (worst picture {worst:.4%}), "
                     f"largest probability difference {diff:.4f}")
    lines += ["", "| row | precision | batch | s/image (each repeat) | images/s | vs our fp32 | CPU s/image | CPU vs our fp32 "
                  "| guard: tried/sent back/fp32 directly "
                  "| masks equal to fp32 (all / worst picture) | largest prob. difference |"
                  + (f" peak MiB (batch {args.memory_batch}) |" if memory else ""),
              "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if memory else "")]
    for (row, batch), entry in timed.items():
        seconds = statistics.median(entry["seconds"])
        base = timed.get(("fp32", batch))  # compare with our plain fp32 row
        speed = f"{statistics.median(base['seconds']) / seconds:.2f}x" if base else "-"
        cpu = statistics.median(entry["cpu"])
        cpu_speed = f"{statistics.median(base['cpu']) / cpu:.2f}x" if base else "-"
        checked = [f"{c}/{r}/{d}" for c, r, d, guarded in entry["ledger"] if guarded]
        guard = ", ".join(checked) if checked else "-"
        agree = diff = "-"
        if fp32_maps is not None and row != "fp32":
            total, worst, largest = agreement(fp32_maps, entry["maps"])
            agree, diff = f"{total:.4%} / {worst:.4%}", f"{largest:.4f}"
        peak = f" {memory[row]['peak_mib']:.0f} |" if row in memory else (" - |" if memory else "")
        lines.append(f"| {row} | {entry['precision']} | {batch} | {seconds:.2f} ({', '.join(f'{s:.2f}' for s in entry['seconds'])}) "
                     f"| {1 / seconds:.3f} | {speed} | {cpu:.2f} | {cpu_speed} | {guard} | {agree} | {diff} |{peak}")
    for (row, batch), entry in timed.items():  # unguarded rows: what the guard's estimate would have said
        if fp32_maps is not None and row != "fp32" and not any(guarded for *_, guarded in entry["ledger"]):
            lines += ["", *estimate_check(fp32_maps, entry["maps"], names, f"{row} (batch {batch})")]
    return "\n".join(lines)


def estimate_check(fp32_maps: list, reduced_maps: list, names: list[str], row: str) -> list[str]:
    """Per picture of an unguarded reduced row: how many mask pixels really differ from fp32's, and what the
    guard would have estimated, with its error measured as in a run (on the first picture its starting
    band sends back, the first one computed in both precisions; later ones sent back add to it), taking
    the error as measured (x1) and as the guard does (its margin)."""
    from pal_core.detect.guard import MeasuredError, PrecisionGuard, logit, logit_distance

    guard, error = PrecisionGuard(), MeasuredError()
    lines = [f"{row} against fp32, per picture, and the guard's judgement of the {row} map:", "",
             "| picture | largest prob. difference | 99th pct. logit error near 0.5 | mask pixels differing | "
             f"within 0.1 of 0.5 | estimated to differ, error x1 / x{guard.margin:g} (error measured on) | guard |",
             "|---|---|---|---|---|---|---|"]
    for name, exact, reduced in zip(names, fp32_maps, reduced_maps):
        differing = float(((exact > THRESHOLD) != (reduced > THRESHOLD)).float().mean())
        near = logit_distance(exact, THRESHOLD) < 2
        logit_error = (logit(reduced[near]) - logit(exact[near])).abs()
        p99 = f"{float(logit_error.quantile(0.99)):.4f}" if 0 < logit_error.numel() <= 1 << 24 else "-"
        within = guard.undecided(reduced, THRESHOLD)
        measured_on = error.images
        if measured_on:
            plain, estimate = error.flip_share(reduced, THRESHOLD, 1.0), error.flip_share(reduced, THRESHOLD, guard.margin)
            estimated = f"{plain:.4%} / {estimate:.4%} ({measured_on})"
        else:
            estimate, estimated = within, f"- / - (0: counted within 0.1: {within:.3%})"
        sent_back = estimate > guard.share
        if sent_back:
            error.add(reduced, exact, THRESHOLD)
        lines.append(f"| {name} | {float((exact - reduced).abs().max()):.4f} | {p99} | {differing:.4%} | {within:.3%} | "
                     f"{estimated} | {'sent back' if sent_back else 'kept'} |")
    return lines


def _load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


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
