"""`pal eval`: artifact IoU and mIoU of a detector on a PAL4VST-layout dataset, per task (Table 1)."""

from __future__ import annotations

import argparse
import json
import sys

from ..detect.masks import check_threshold
from ..train.evaluation import evaluate_detector, write_json
from ..train.segmentation_data import DatasetLayoutError
from .common import add_model_arguments, add_threshold_argument, load_detector_from_args


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval", help="IoU / mIoU of a detector on a labelled dataset, per task",
        description="Runs a detector on DATA/images/<split> and compares with DATA/labels/<split> (0/1 or 0/255 "
                    "PNGs). Prints the artifact-class IoU, mIoU and clean-image PAR per task folder and overall, "
                    "in the layout of PAL4VST's Table 1.")
    p.add_argument("--data", required=True, help="dataset folder (images/<split>/..., labels/<split>/...)")
    p.add_argument("--split", default="test", help="split folder to evaluate (default: test)")
    add_threshold_argument(p)
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        check_threshold(args.threshold, "--threshold")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    detector = load_detector_from_args(args)
    if detector is None:
        return 2
    try:
        result = evaluate_detector(detector, args.data, args.split, args.threshold, progress=not args.quiet)
    except DatasetLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.table())
    if args.json:
        try:
            write_json(result, args.json, overwrite=args.overwrite)
        except FileExistsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"wrote {args.json}")
    return 0
