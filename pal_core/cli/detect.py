"""`pal detect`: artifact probability, mask and PAR for image files; one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..imageio import ImageReadError, list_images, overlay, read_image, write_png
from ..masks import binarize, check_threshold, par
from ..refine import plan_regions
from ..sheets import SheetRow, detect_row, draw_sheet
from ..verdicts import DetectTally, detect_line
from .common import SHEET_MAX_ROWS, add_model_arguments, load_detector_from_args, sheet_problem
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
    parser.add_argument("--threshold", type=float, default=0.5, help="probability above which a pixel is an artifact")
    parser.add_argument("--out", type=Path, help="folder for the mask, probability and overlay PNGs")
    parser.add_argument("--sheet", type=Path, metavar="FILE.png",
                        help=f"draw a contact sheet: input, artifacts, probability, regions (first {SHEET_MAX_ROWS} images)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors on stderr")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)


def output_paths(out_dir: Path, image: Path) -> dict[str, Path]:
    return {kind: out_dir / f"{image.stem}.{kind}.png" for kind in OUTPUT_KINDS}


def check_outputs(out_dir: Path, images: list[Path], overwrite: bool) -> list[str]:
    """Problems that must stop the run before any work: existing outputs, two inputs with one stem."""
    problems, owners = [], {}
    for image in images:
        if image.stem in owners:
            problems.append(f"{image} and {owners[image.stem]} would write the same files "
                            f"({image.stem}.*.png); run them with different --out folders")
        owners[image.stem] = image
        if not overwrite:
            problems += [f"{p} already exists (pass --overwrite to replace it)"
                         for p in output_paths(out_dir, image).values() if p.exists()]
    return problems


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
    if args.sheet is not None and (problem := sheet_problem(args.sheet, args.overwrite)):
        problems.append(problem)
    if problems:
        print("pal detect: nothing was written:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    detector = load_detector_from_args(args)
    if detector is None:
        return 2

    console = Console("detect", len(images), args.quiet)
    tally = DetectTally(args.threshold, detector.name)
    rows: list[SheetRow] = []
    for path in images:
        try:
            image = read_image(path)
        except ImageReadError as error:
            tally.add_failure()
            console.error(str(error))
            print(json.dumps({"image": str(path), "error": str(error)}), flush=True)
            console.image_done()
            continue
        prob = detector.predict([image])[0]
        mask = binarize(prob, args.threshold)
        record = {
            "image": str(path),
            "par": round(float(par(mask[None])[0]), 6),
            "width": image.shape[1],
            "height": image.shape[0],
            "max_prob": round(prob.max().item(), 6),
            "model": detector.name,
            "precision": detector.precision,
        }
        if args.out is not None:
            paths = output_paths(args.out, path)
            write_png(paths["mask"], mask.float(), overwrite=args.overwrite)
            write_png(paths["prob"], prob, overwrite=args.overwrite)
            write_png(paths["overlay"], overlay(image, mask.float()), overwrite=args.overwrite)
            record["outputs"] = {kind: str(p) for kind, p in paths.items()}
        print(json.dumps(record), flush=True)
        tally.add(record)
        boxes = [r.box for r in plan_regions(mask[None]).regions]  # what `pal fix` would repaint
        console.line(detect_line(path.name, record, len(boxes)))
        if args.sheet is not None and len(rows) < SHEET_MAX_ROWS:
            rows.append(detect_row(path.name, image, mask, prob, boxes, record["par"]))
        console.image_done()
    console.close()
    for line in tally.summary(str(args.out) if args.out is not None else None):
        console.line(f"pal detect: {line}")
    if tally.failed:
        console.error(f"{tally.failed} of {tally.images} images could not be read")
    if args.sheet is not None and rows:
        write_png(args.sheet, draw_sheet(rows), overwrite=args.overwrite)
        console.line(f"pal detect: contact sheet of {len(rows)} of {len(images)} images in {args.sheet}")
    return 1 if tally.failed else 0
