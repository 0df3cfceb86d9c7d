"""`pal detect`: artifact probability, mask and PAR for image files; one JSON line per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..imageio import ImageReadError, list_images, overlay, read_image, write_png
from ..masks import check_threshold
from .common import add_model_arguments, load_detector_from_args

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
    if args.out is not None:
        problems = check_outputs(args.out, images, args.overwrite)
        if problems:
            print("pal detect: nothing was written:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 2
    detector = load_detector_from_args(args)
    if detector is None:
        return 2

    failures = 0
    for path in images:
        try:
            image = read_image(path)
        except ImageReadError as error:
            failures += 1
            print(f"pal detect: {error}", file=sys.stderr)
            print(json.dumps({"image": str(path), "error": str(error)}), flush=True)
            continue
        prob = detector.predict([image])[0]
        mask = prob > args.threshold
        record = {
            "image": str(path),
            "par": round(mask.float().mean().item(), 6),
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
    if failures:
        print(f"pal detect: {failures} of {len(images)} images could not be read", file=sys.stderr)
        return 1
    return 0
