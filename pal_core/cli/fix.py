"""`pal fix`: find artifacts in images and repaint them through zoomed-in crops.

For each image: detect, plan one square crop per region, inpaint the crops, blend them back and
(unless --no-redetect) detect again, keeping each region's fix only if it reduced the artifacts.
Writes OUT/<name>.png and OUT/<name>.json (regions, boxes, PAR before and after). One bad input is
reported and skipped; the exit status is 1 when any input failed. Nothing is ever overwritten
without --overwrite, and files are written through a temporary file renamed into place.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import atomic
from ..atomic import remove_stale_temporaries
from ..hub.download import DownloadError
from ..hub.fingerprint import file_sha256, model_sha256
from ..hub.loading import load_detector
from ..imageio import ImageReadError, list_images, read_image, to_uint8, write_png
from ..locks import BusyError, exclusive_lock
from ..outputs import (MADE_FROM_KEY, check_output_folder, describe_os_error, is_output_of, made_from_text,
                       outputs_that_are_inputs)
from ..refinement.crops import DEFAULT_MIN_SIDE, DEFAULT_RESOLUTION, DEFAULT_ZOOM
from ..refinement.inpainters import DEFAULT, FALLBACK, SPECS, available_weight_free, default_weight_free, make_inpainter
from ..refinement.refine import RefineOptions, refine
from ..sheets import SheetRow, draw_sheet, fix_row
from ..verdicts import FixTally, fix_line
from .common import SHEET_MAX_ROWS, add_model_arguments, add_threshold_argument, sheet_problem
from .console import Console


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fix", help="repaint detected artifacts through zoomed-in crops",
        description="Detect perceptual artifacts, inpaint a zoomed-in square crop around each region and blend "
                    "it back. Writes OUT/<name>.png and OUT/<name>.json.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders searched recursively")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    add_model_arguments(parser)
    parser.add_argument("--inpainter", default="opencv",
                        help=f"one of: {', '.join(SPECS)}; opencv-METHOD@SIZE inpaints at most SIZE px wide "
                             f"(default: opencv = {DEFAULT}, or {FALLBACK} where OpenCV lacks the contrib modules)")
    parser.add_argument("--prompt", default="", help="diffusers: what the repainted regions should show")
    parser.add_argument("--negative-prompt", default="", help="diffusers: what they should not show")
    parser.add_argument("--steps", type=int, default=30, help="diffusers: sampling steps (default: 30)")
    parser.add_argument("--guidance", type=float, default=7.5, help="diffusers: guidance scale (default: 7.5)")
    parser.add_argument("--strength", type=float, default=0.99, help="diffusers: denoising strength (default: 0.99)")
    parser.add_argument("--seed", type=int, default=0, help="region i of an image uses seed + i (default: 0)")
    parser.add_argument("--diffusers-config", default=None, metavar="FOLDER",
                        help="diffusers: a local pipeline folder with the configs a single checkpoint file needs")
    add_threshold_argument(parser)
    parser.add_argument("--zoom", type=float, default=DEFAULT_ZOOM,
                        help=f"crop side / region's longest side (default: {DEFAULT_ZOOM}, the paper)")
    parser.add_argument("--min-side", type=int, default=DEFAULT_MIN_SIDE, help=f"smallest crop side in pixels (default: {DEFAULT_MIN_SIDE})")
    parser.add_argument("--min-area", type=int, default=RefineOptions.min_area,
                        help=f"ignore regions smaller than this many pixels (default: {RefineOptions.min_area})")
    parser.add_argument("--max-area-ratio", type=float, default=RefineOptions.max_area_ratio,
                        help="leave an image alone when its mask covers more than this fraction "
                             f"(default: {RefineOptions.max_area_ratio})")
    parser.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION,
                        help=f"inpainting size of every crop (default: {DEFAULT_RESOLUTION}; 1024 for SDXL)")
    parser.add_argument("--multiple", type=int, choices=(8, 16, 64), default=8,
                        help="round the inpainting size to a multiple of this (default: 8)")
    parser.add_argument("--no-merge", action="store_true", help="keep overlapping crops separate")
    parser.add_argument("--color-match", action="store_true",
                        help="match each fix's colours to its surroundings (Lab mean and spread)")
    parser.add_argument("--no-redetect", action="store_true",
                        help="keep every fix without checking that it reduced the artifacts (one detector pass "
                             "instead of two or three)")
    parser.add_argument("--sheet", type=Path, metavar="FILE.png",
                        help=f"draw a before/after contact sheet (the first {SHEET_MAX_ROWS} images)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors on stderr")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = list_images(args.images)
    if not paths:
        return _fail("no images found in the given paths")
    targets = _output_names(paths, args.out)
    if isinstance(targets, str):
        return _fail(targets)
    problems = _output_problems(targets, args.out, args.overwrite)
    if args.sheet is not None and (problem := sheet_problem(args.sheet, args.overwrite, paths)):
        problems.append(problem)
    if problems:
        return _fail("nothing was written:\n  " + "\n  ".join(problems))
    try:
        options = _options(args)
        detector = load_detector(args.model, device=args.device, dtype=args.dtype, input_size=args.input_size,
                                 download=args.download, trust_code=args.allow_torchscript)
        # --precision auto is measured for the detector only; the inpainter then keeps its own default (fp32).
        inpainter_dtype = None if args.dtype == "auto" else args.dtype
        inpainter = make_inpainter(args.inpainter, device=args.device, dtype=inpainter_dtype,
                                   **_inpainter_settings(args))
    except (OSError, ValueError, DownloadError) as error:  # missing or unfit model files, bad settings
        return _fail(str(error))
    settings = result_settings(args, options, detector, inpainter)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        # held for the whole run: a second run into this folder would take our files for its own and replace them
        with exclusive_lock(args.out / LOCK_NAME, f"{args.out} is being written by another pal fix run; wait for "
                                                  "it to finish, or give this run another --out"):
            if not args.overwrite and (conflicts := _settings_conflicts(targets, settings)):
                return _fail("nothing was written:\n  " + "\n  ".join(conflicts))
            remove_stale_temporaries(args.out)  # left by a run that was killed while writing
            return _fix_all(args, paths, targets, options, detector, inpainter, settings)
    except BusyError as error:
        return _fail(str(error))
    except OSError as error:
        return _fail(f"stopped: {describe_os_error(error)}")


def _fix_all(args: argparse.Namespace, paths: list[Path], targets: dict[Path, Path], options: RefineOptions,
             detector, inpainter, settings: dict) -> int:
    console = Console("fix", len(paths), args.quiet, steps="step")
    if args.inpainter == "opencv" and default_weight_free() != DEFAULT:
        console.line(f"pal fix: this OpenCV lacks the contrib modules, so the inpainter is {FALLBACK}, not {DEFAULT} "
                     "(see docs/install.md: one OpenCV wheel per environment)")
    tally = FixTally(options.threshold, inpainter.name, tuple(s for s in available_weight_free() if s != inpainter.name),
                     detector.name)
    rows: list[SheetRow] = []
    for path in paths:
        if not args.overwrite and _finished(path, targets[path], settings):  # resume: an earlier run fixed it
            tally.already_done += 1
            console.line(f"{path.name}: already fixed in {args.out}, skipped")
            console.image_done()
            continue
        try:
            report, row = _fix_one(path, targets[path], detector, inpainter, options, args, console, settings,
                                   want_row=args.sheet is not None and len(rows) < SHEET_MAX_ROWS)
        except OSError as error:
            tally.add_failure()
            console.error(f"{path}: {describe_os_error(error)}")
            if console.stopped_by(error):
                return 1
        except (ImageReadError, FileExistsError, ValueError, RuntimeError) as error:  # one bad file, not the run
            tally.add_failure()
            console.error(f"{path}: {error}" if str(path) not in str(error) else str(error))
        else:
            tally.add(report)
            console.line(fix_line(path.name, report, report["output"]))
            rows += [row] if row is not None else []
        console.image_done()
    console.close()
    for line in tally.summary(str(args.out)):
        console.line(f"pal fix: {line}")
    if tally.failed:
        console.error(f"{tally.failed} of {tally.images} images failed")
    if args.sheet is not None and rows:
        write_png(args.sheet, draw_sheet(rows), overwrite=args.overwrite)
        shown = f"the first {len(rows)} of {len(paths)} images" if len(paths) > len(rows) else "every image"
        console.line(f"pal fix: before/after sheet of {shown} in {args.sheet}")
    return 1 if tally.failed else 0


def _output_problems(targets: dict[Path, Path], out: Path, overwrite: bool) -> list[str]:
    """What must stop the run before any work: an unusable --out, outputs that are inputs, and (without
    --overwrite) existing files of our output names that no earlier run made from the same input."""
    problem = check_output_folder(out)
    if problem:
        return [problem]
    problems = outputs_that_are_inputs({path: [t, t.with_suffix(".json")] for path, t in targets.items()})
    if not overwrite:
        for path, target in targets.items():
            problems += [f"{output} already exists and was not made from {path} (pass --overwrite to replace it)"
                         for output in (target, target.with_suffix(".json"))
                         if output.exists() and not _made_by_us(output, path)]
    return problems


def _made_by_us(output: Path, source: Path) -> bool:
    if output.suffix == ".png":
        return is_output_of(output, source)
    report = _read_report(output)
    if report is None:
        return False
    try:
        # the report lives beside its image: compare names (a run given the folder as a relative path and
        # one given it as an absolute path write the same files); the input by its digest, else its path
        same_input = (report["made_from"] == made_from_text(source)[MADE_FROM_KEY] if "made_from" in report
                      else Path(report["input"]).resolve() == source.resolve())
        return same_input and Path(report["output"]).name == output.with_suffix(".png").name
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _read_report(path: Path) -> dict | None:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return report if isinstance(report, dict) else None


def _finished(path: Path, target: Path, settings: dict) -> bool:
    """Both outputs are there and ours (the report is written last, so the image is done), made from this
    input as it is now, with this model file and these settings: only then is the result reused."""
    report_path = target.with_suffix(".json")
    if not (target.exists() and report_path.exists() and _made_by_us(target, path) and _made_by_us(report_path, path)):
        return False
    report = _read_report(report_path) or {}
    return report.get("settings") == settings and report.get("input_sha256") == _input_sha256(path)


def _settings_conflicts(targets: dict[Path, Path], settings: dict) -> list[str]:
    """Finished results of ours that were made with other settings or another model: not reused, and not
    replaced without --overwrite (they are a run's results the user may want to keep)."""
    problems = []
    for path, target in targets.items():
        report_path = target.with_suffix(".json")
        if not (report_path.exists() and _made_by_us(report_path, path)):
            continue
        recorded = (_read_report(report_path) or {}).get("settings")
        if recorded == settings:
            continue
        if not isinstance(recorded, dict):
            changed = "settings an earlier pal version did not record"
        else:
            changed = ", ".join(f"{key} {_shown(recorded.get(key))} -> {_shown(settings.get(key))}"
                                for key in settings if recorded.get(key) != settings.get(key))
        problems.append(f"{target} was fixed by an earlier run with other settings ({changed}); pass --overwrite "
                        "to fix it again with these, or give another --out")
    return problems


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def result_settings(args: argparse.Namespace, options: RefineOptions, detector, inpainter) -> dict:
    """Everything that shapes a fixed image besides the input: recorded in its report, compared on resume."""
    return json.loads(json.dumps({  # as a report read back holds them (tuples become lists)
        "model": getattr(detector, "name", None), "model_sha256": model_sha256(detector),
        "precision": getattr(detector, "precision", None), "input_size": getattr(detector, "input_size", None),
        "inpainter": inpainter.name, "prompt": args.prompt, "negative_prompt": args.negative_prompt,
        "steps": args.steps, "guidance": args.guidance, "strength": args.strength, "seed": args.seed,
        "diffusers_config": args.diffusers_config, **asdict(options)}))


def _input_sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _fix_one(path: Path, target: Path, detector, inpainter, options: RefineOptions, args: argparse.Namespace,
             console: Console, settings: dict, want_row: bool) -> tuple[dict, SheetRow | None]:
    report_path = target.with_suffix(".json")
    input_sha256 = _input_sha256(path)  # before reading: a file changed meanwhile is not taken for this one
    image, alpha = read_image(path, with_alpha=True)
    result = refine(image.unsqueeze(0), detector, inpainter, options, prompts=args.prompt, seed=args.seed,
                    progress=console.step_progress)
    fixed = result.images[0]
    # an output of an earlier, unfinished run for this input may be replaced; anything else only with --overwrite
    overwrite = args.overwrite or (target.exists() and _made_by_us(target, path))
    picture = np.dstack([to_uint8(fixed), to_uint8(alpha)]) if alpha is not None else fixed  # keep transparency
    write_png(target, picture, overwrite=overwrite, text=made_from_text(path))
    report = {
        "input": str(path), "output": str(target), "size": list(image.shape[:2]),
        "model": getattr(detector, "name", None),
        "detector": getattr(getattr(detector, "info", None), "source", None), "inpainter": inpainter.name,
        "prompt": args.prompt, "seed": args.seed, "threshold": options.threshold,
        **result.report()[0],
        "made_from": made_from_text(path)[MADE_FROM_KEY], "input_sha256": input_sha256, "settings": settings,
    }
    write_json(report_path, report, overwrite=args.overwrite or report_path.exists() and _made_by_us(report_path, path))
    row = None
    if want_row:
        row = fix_row(fix_line(path.name, report).split(";")[0], image, result.mask_before[0], fixed,
                      result.attempted[0], report["regions"], report["par_before"], report["par_after"])
    return report, row


def write_json(path: Path, data: dict, overwrite: bool = False) -> Path:
    """Writes JSON through a temporary file renamed into place (no half-written reports)."""
    return atomic.write_text(path, json.dumps(data, indent=2) + "\n", overwrite)


def _output_names(paths: list[Path], out: Path) -> dict[Path, Path] | str:
    """OUT/<stem>.png per input, or an error message when two inputs would write the same file."""
    targets: dict[Path, Path] = {}
    seen: dict[Path, Path] = {}
    for path in paths:
        target = out / f"{path.stem}.png"
        if target in seen:
            return (f"{seen[target]} and {path} would both be written to {target}; rename one, or fix them "
                    "in separate runs with different --out folders")
        seen[target] = path
        targets[path] = target
    return targets


def _options(args: argparse.Namespace) -> RefineOptions:
    """The refinement settings; RefineOptions checks them (a ValueError says what is wrong)."""
    return RefineOptions(
        threshold=args.threshold, min_area=args.min_area, max_area_ratio=args.max_area_ratio, zoom=args.zoom,
        min_side=args.min_side, resolution=args.resolution, multiple=args.multiple,
        merge_overlapping=not args.no_merge, color_match=args.color_match, redetect=not args.no_redetect)


def _inpainter_settings(args: argparse.Namespace) -> dict:
    if not args.inpainter.startswith("diffusers:"):
        return {}
    return {"negative_prompt": args.negative_prompt, "steps": args.steps, "guidance": args.guidance,
            "strength": args.strength, "config": args.diffusers_config}


LOCK_NAME = ".pal-fix.lock"  # in --out, held by the run writing there


def _fail(message: str) -> int:
    print(f"pal fix: error: {message}", file=sys.stderr)
    return 2
