"""`pal detect`: artifact probability, mask and PAR for image files; one JSON line per image."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ..atomic import remove_stale_temporaries
from ..hub.fingerprint import model_sha256
from ..detect.masks import binarize, check_threshold, par
from ..imageio import ImageReadError, list_images, overlay, read_image, write_png
from ..locks import BusyError, exclusive_lock
from ..outputs import (check_output_folder, describe_os_error, is_output_of, made_from_text,
                       outputs_that_are_inputs, png_text_value)
from ..refinement.refine import plan_regions
from ..sheets import SheetRow, detect_row, draw_sheet
from ..verdicts import DetectTally, detect_line
from .common import SHEET_MAX_ROWS, add_model_arguments, add_threshold_argument, load_detector_from_args, sheet_problem
from .console import Console

OUTPUT_KINDS = ("mask", "prob", "overlay")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect", help="find artifacts in images (probability, mask, PAR)",
        description="Runs the artifact detector on images and prints one JSON object per image "
                    "(image, par, size, model, precision). With --out, also writes <stem>.mask.png (0/255), "
                    "<stem>.prob.png (probability as 0..255) and <stem>.overlay.png.")
    parser.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    add_model_arguments(parser)
    add_threshold_argument(parser)
    parser.add_argument("--out", type=Path, help="folder for the mask, probability and overlay PNGs")
    parser.add_argument("--sheet", type=Path, metavar="FILE.png",
                        help=f"draw a contact sheet: input, artifacts, probability, regions (first {SHEET_MAX_ROWS} images)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors on stderr")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)


def output_paths(out_dir: Path, image: Path) -> dict[str, Path]:
    return {kind: out_dir / f"{image.stem}.{kind}.png" for kind in OUTPUT_KINDS}


def check_outputs(out_dir: Path, images: list[Path], overwrite: bool) -> list[str]:
    """Problems that must stop the run before any work: an unusable --out, outputs that are inputs,
    two inputs with one stem, and (without --overwrite) existing files that this command did not make."""
    problem = check_output_folder(out_dir)
    if problem:
        return [problem]
    problems, owners = [], {}
    for image in images:
        if image.stem in owners:
            problems.append(f"{image} and {owners[image.stem]} would write the same files "
                            f"({image.stem}.*.png); run them with different --out folders")
        owners[image.stem] = image
        if not overwrite:
            problems += [f"{p} already exists and was not made from {image} (pass --overwrite to replace it)"
                         for p in output_paths(out_dir, image).values() if p.exists() and not is_output_of(p, image)]
    problems += outputs_that_are_inputs({image: list(output_paths(out_dir, image).values()) for image in images})
    return problems


def done_outputs(out_dir: Path, image: Path, settings: str) -> dict[str, Path]:
    """The outputs an earlier run already wrote for this image with these settings (complete files: they are
    written atomically)."""
    return {kind: p for kind, p in output_paths(out_dir, image).items()
            if p.exists() and is_output_of(p, image) and png_text_value(p, SETTINGS_KEY) == settings}


SETTINGS_KEY = "pal:settings"  # PNG text chunk: a digest of what shaped the output (see `settings_digest`)
LOCK_NAME = ".pal-detect.lock"  # in --out, held by the run writing there


def settings_digest(detector, threshold: float) -> str:
    """A digest of everything besides the input that shapes the outputs: the model file, threshold, size, precision."""
    settings = {"model_sha256": model_sha256(detector), "model": detector.name, "threshold": threshold,
                "input_size": detector.input_size, "precision": detector.precision}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def settings_conflicts(out_dir: Path, images: list[Path], settings: str) -> list[str]:
    """Outputs of ours made by an earlier run with other settings: neither reused nor replaced without --overwrite."""
    return [f"{p} was made by an earlier run with another model, threshold, input size or precision; pass "
            "--overwrite to make it again with these, or give another --out"
            for image in images for p in output_paths(out_dir, image).values()
            if p.exists() and is_output_of(p, image) and png_text_value(p, SETTINGS_KEY) != settings]


def run(args: argparse.Namespace) -> int:
    try:
        check_threshold(args.threshold, "--threshold")
    except ValueError as error:
        print(f"pal detect: {error}", file=sys.stderr)
        return 2
    images = list_images(args.images)
    if not images:
        print("pal detect: no images found in " + " ".join(args.images), file=sys.stderr)
        return 2
    problems = check_outputs(args.out, images, args.overwrite) if args.out is not None else []
    if args.sheet is not None and (problem := sheet_problem(args.sheet, args.overwrite, images)):
        problems.append(problem)
    if problems:
        print("pal detect: nothing was written:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    detector = load_detector_from_args(args)
    if detector is None:
        return 2
    if args.out is None:
        return detect_all(args, images, detector, settings_digest(detector, args.threshold))
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        # held for the whole run: a second run into this folder would take our files for its own
        with exclusive_lock(args.out / LOCK_NAME, f"{args.out} is being written by another pal detect run; wait "
                                                  "for it to finish, or give this run another --out"):
            settings = settings_digest(detector, args.threshold)
            if not args.overwrite and (conflicts := settings_conflicts(args.out, images, settings)):
                print("pal detect: nothing was written:\n  " + "\n  ".join(conflicts[:10]), file=sys.stderr)
                return 2
            remove_stale_temporaries(args.out)  # left by a run that was killed while writing
            return detect_all(args, images, detector, settings)
    except BusyError as error:
        print(f"pal detect: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"pal detect: stopped: {describe_os_error(error)}", file=sys.stderr)
        return 1


def detect_all(args: argparse.Namespace, images: list[Path], detector, settings: str) -> int:

    console = Console("detect", len(images), args.quiet)
    tally = DetectTally(args.threshold, detector.name)
    rows: list[SheetRow] = []
    write_failures = 0
    for path in images:
        done = {} if args.out is None or args.overwrite else done_outputs(args.out, path, settings)
        if len(done) == len(OUTPUT_KINDS):  # resume: an earlier run finished this image
            print(json.dumps({"image": str(path), "skipped": "its outputs are already there",
                              "outputs": {kind: str(p) for kind, p in done.items()}}), flush=True)
            console.line(f"{path.name}: already done in {args.out}, skipped")
            tally.already_done += 1
            console.image_done()
            continue
        try:
            image = read_image(path)
        except ImageReadError as error:
            tally.add_failure()
            console.error(str(error))
            print(json.dumps({"image": str(path), "error": str(error)}), flush=True)
            console.image_done()
            continue
        try:
            record, prob, mask = detect_one(detector, path, image, args, done, settings)
        except ValueError as error:  # non-finite pixels or probabilities: an error, never PAR 0
            tally.add_failure()
            console.error(f"{path}: {error}")
            print(json.dumps({"image": str(path), "error": str(error)}), flush=True)
            console.image_done()
            continue
        except OSError as error:
            console.error(f"could not write the outputs of {path} ({describe_os_error(error)})")
            if console.stopped_by(error):
                return 1
            write_failures += 1
            console.image_done()
            continue
        print(json.dumps(record), flush=True)
        tally.add(record)
        boxes = [r.box for r in plan_regions(mask[None]).regions]  # what `pal fix` would repaint
        console.line(detect_line(path.name, record, len(boxes)))
        if args.sheet is not None and len(rows) < SHEET_MAX_ROWS:
            rows.append(detect_row(path.name, image, mask, prob, boxes, record["par"]))
        console.image_done()
    console.close()
    ledger = detector.guard_counts
    if detector.guarded and ledger.images:  # precision auto below fp32: how often fp32 made the maps instead
        console.line(f"pal detect: {ledger.summary(detector.guard, detector.precision)}")
    for line in tally.summary(str(args.out) if args.out is not None else None):  # the summary comes last
        console.line(f"pal detect: {line}")
    if tally.failed:
        console.error(f"{tally.failed} of {tally.images} images could not be read or scored")
    if write_failures:
        console.error(f"the outputs of {write_failures} images could not be written")
    if args.sheet is not None and rows:
        write_png(args.sheet, draw_sheet(rows), overwrite=args.overwrite)
        console.line(f"pal detect: contact sheet of {len(rows)} of {len(images)} images in {args.sheet}")
    return 1 if tally.failed or write_failures else 0


def detect_one(detector, path: Path, image, args: argparse.Namespace, done: dict[str, Path], settings: str = ""):
    """Detects one image and writes the outputs it does not have yet: (JSON record, probability, mask)."""
    prob = detector.predict([image], threshold=args.threshold)[0]
    if not bool(prob.isfinite().all()):  # the detector does not run on non-finite pixels (see predict)
        raise ValueError("the image has NaN or infinite pixels (a damaged or float image file), so it cannot be "
                         "scored; re-export it as an 8- or 16-bit PNG")
    mask = binarize(prob, args.threshold)
    record = {
        "image": str(path),
        "par": round(float(par(mask[None])[0]), 6),
        "width": image.shape[1],
        "height": image.shape[0],
        "max_prob": round(prob.max().item(), 6),
        "model": detector.name,
        "precision": detector.last_precisions[0] or detector.precision,  # fp32 where the guard recomputed it
    }
    if args.out is not None:
        paths = output_paths(args.out, path)
        pictures = {"mask": lambda: mask.float(), "prob": lambda: prob,
                    "overlay": lambda: overlay(image, mask.float())}
        for kind, picture in pictures.items():
            if kind not in done:
                write_png(paths[kind], picture(), overwrite=args.overwrite,
                          text={**made_from_text(path), SETTINGS_KEY: settings})
        record["outputs"] = {kind: str(p) for kind, p in paths.items()}
    return record, prob, mask
