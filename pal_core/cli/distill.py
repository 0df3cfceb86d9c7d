"""`pal distill`: trains a small, fast student to reproduce any detector on the user's own images."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from .. import atomic
from ..detect.preprocess import Preprocess
from ..hub.checkpoint import CheckpointError, DetectorCheckpoint
from ..hub.loading import DEFAULT_MODEL, MODEL_INPUT_SIZE, ModelNotFoundError, load_detector, read_checkpoint
from ..models.lite_fpn import LiteFPN, PretrainedWeightsError, load_imagenet_encoder
from ..outputs import check_output_file
from ..train.distillation import (DistillationError, DistillSettings, agreement_table, default_cache_dir, distill,
                                  distill_recipe)
from ..train.segmentation_data import DatasetLayoutError
from ..train.training import TrainingError
from .common import (add_recipe_arguments, add_run_control_arguments, parse_input_size, recipe_options,
                     start_training_run)

FRESH_STUDENTS = ("imagenet", "random")


def register(subparsers) -> None:
    recipe, settings = distill_recipe(), DistillSettings()
    p = subparsers.add_parser(
        "distill", help="train a fast student that reproduces a detector on your images",
        description="Runs the teacher (any loadable detector, e.g. the official PAL4VST model) over your unlabelled "
                    "images once (its probabilities are cached), trains a small student (default: starting from the "
                    "shipped pal_lite) to reproduce them, measures how well it agrees with the teacher on held-out "
                    "images and how much faster it is, and writes the student (it loads wherever a model loads).")
    p.add_argument("--teacher", required=True, help="the detector to learn from: a file (.pth, .safetensors, .pt) or "
                                                    "a model name")
    p.add_argument("--images", required=True, nargs="+", help="image files and folders (searched recursively)")
    p.add_argument("--out", required=True, help="the student file to write (.safetensors)")
    p.add_argument("--student", default=DEFAULT_MODEL,
                   help=f"where the student starts: a detector file or name (default {DEFAULT_MODEL}), 'imagenet' (a "
                        "fresh pal_lite network with ImageNet encoder; needs the train extra) or 'random'")
    p.add_argument("--student-input-size", type=int, default=None,
                   help="square size the student trains and runs at (default: the start model's, 512 for pal_lite); "
                        "256 runs ~4x fewer pixels (the size is saved in the student file)")
    p.add_argument("--name", default=None, help="name stored in the student (default: --out's file name)")
    p.add_argument("--report", default=None, help="agreement report JSON (default: <out>.agreement.json)")
    p.add_argument("--cache", default=None, help=f"teacher cache folder (default {default_cache_dir()})")
    p.add_argument("--run-dir", default=None, help="checkpoints and logs of the run (default: <out>.run/)")
    p.add_argument("--teacher-input-size", default=MODEL_INPUT_SIZE, type=parse_input_size,
                   help="size the teacher runs at: 'model' (the size saved in its file; PAL4VST: 512), a size, "
                        "or 'native'")
    p.add_argument("--teacher-dtype", default=None, choices=["fp32", "fp16", "bf16"], help="teacher precision (CUDA)")
    p.add_argument("--teacher-batch-size", type=int, default=4)
    p.add_argument("--threshold", type=float, default=settings.threshold, help="mask threshold for the agreement")
    p.add_argument("--held-out", type=float, default=settings.held_out_share,
                   help="share of the images kept out of training to measure agreement")
    p.add_argument("--map-size", type=int, default=settings.map_size, help="size the teacher maps are cached at")
    p.add_argument("--synthetic", default=None, help="also train on this labelled dataset (PAL4VST layout, e.g. from "
                                                     "`pal prepare-data`) so clean images stay clean")
    p.add_argument("--synthetic-share", type=float, default=settings.synthetic_share,
                   help="share of training samples taken from --synthetic")
    p.add_argument("--speed-images", type=int, default=settings.speed_images,
                   help="held-out images both models are timed on at the end")
    add_recipe_arguments(p, recipe)
    # The learning rate follows the student: 1e-4 for one that starts trained, 2e-4 for a fresh one.
    p.set_defaults(lr=None)
    add_run_control_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start_training_run(args)
    out = Path(args.out)
    report_path = Path(args.report) if args.report else out.with_name(out.stem + ".agreement.json")
    if report_path.exists() and not args.overwrite:
        return _fail(f"{report_path} already exists; choose another --report or pass --overwrite")
    if (problem := check_output_file(report_path, "--report")) is not None:  # before the teacher pass and training
        return _fail(problem)
    options = recipe_options(args)
    if options["lr"] is None:  # not given: the student's own (see distill_recipe)
        del options["lr"]
    recipe = distill_recipe(fresh_student=args.student in FRESH_STUDENTS, **options)
    try:
        settings = DistillSettings(threshold=args.threshold, held_out_share=args.held_out, map_size=args.map_size,
                                   synthetic=args.synthetic, synthetic_share=args.synthetic_share,
                                   speed_images=args.speed_images)
        teacher = load_detector(args.teacher, device=args.device, dtype=args.teacher_dtype,
                                input_size=args.teacher_input_size, batch_size=args.teacher_batch_size)
        student = _student_start(args.student, args.student_input_size)
        result = distill(teacher, args.images, out, student=student, name=args.name, recipe=recipe,
                         settings=settings, cache_dir=args.cache, run_dir=args.run_dir, device=args.device,
                         resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    except (DistillationError, TrainingError, ModelNotFoundError, CheckpointError, DatasetLayoutError,
            PretrainedWeightsError, FileExistsError, ValueError) as error:
        return _fail(str(error))
    report = result.report
    cache = report["cache"]
    for path, why in report["images"]["unreadable"]:
        print(f"skipped (unreadable): {why}", file=sys.stderr)
    print(f"teacher maps: {cache['computed']} computed, {cache['reused']} reused from {cache['folder']} "
          f"({cache['bytes_per_image'] / 1000:.1f} kB per image)")
    print(f"{report['images']['train']} training images, {report['images']['held_out']} held out; "
          f"{report['training']['steps']} steps in {report['training']['seconds'] / 60:.1f} min")
    print(agreement_table(report))
    atomic.write_text(report_path, json.dumps(report, indent=1), overwrite=args.overwrite)
    print(f"student: {result.out}; report: {report_path}")
    return 0


def _student_start(kind: str, input_size: int | None) -> DetectorCheckpoint:
    """The weights the student starts from: a detector file or name, or a new pal_lite-shaped network with an
    ImageNet encoder (the `train` extra) or all random; at `input_size` when given."""
    if input_size is not None and input_size < 32:
        raise ValueError(f"--student-input-size must be at least 32, not {input_size}")
    if kind in FRESH_STUDENTS:
        model = LiteFPN()
        if kind == "imagenet":
            load_imagenet_encoder(model)
        start = DetectorCheckpoint(model, f"lite_fpn_{kind}", Preprocess(), f"a fresh lite_fpn ({kind} initialisation)")
    else:
        start = read_checkpoint(kind)
    if input_size is not None:
        start.preprocess = replace(start.preprocess, input_size=input_size)
    return start


def _fail(message: str) -> int:
    print(f"pal distill: {message}", file=sys.stderr)
    return 2
