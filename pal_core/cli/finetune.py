"""`pal finetune`: continues training any loadable detector on a PAL4VST-layout dataset (the paper's recipe)."""

from __future__ import annotations

import argparse
import sys

from ..detect.devices import resolve_device
from ..hub.checkpoint import CheckpointError
from ..hub.loading import ModelNotFoundError, read_checkpoint, resolve_source
from ..train.segmentation_data import DatasetLayoutError
from ..train.training import TrainingError, finetune_recipe, train
from .common import add_recipe_arguments, add_run_control_arguments, recipe_options, start_training_run


def register(subparsers) -> None:
    defaults = finetune_recipe()
    p = subparsers.add_parser(
        "finetune", help="fine-tune a detector on labelled data (PAL4VST layout)",
        description="Fine-tunes a detector (ours, or an official PAL4VST mmseg .pth) on DATA/images/train + "
                    "DATA/labels/train, validating on DATA/*/val. Defaults follow the paper: AdamW lr 6e-5, "
                    "betas (0.9, 0.999), weight decay 0.01, head lr x10, random resize 0.5-2.0, crop 512, flip, "
                    "cross entropy, batch 8, warm-up then poly decay.")
    p.add_argument("--data", required=True, help="dataset folder (images/{train,val}, labels/{train,val})")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    p.add_argument("--model", default=None, help="detector to start from (file or shipped name; default: the "
                                                 "shipped default). The official TorchScript end2end.pt cannot be "
                                                 "trained; use its mmseg .pth")
    p.add_argument("--name", default=None, help="name stored in the checkpoints (default: <model>_finetuned)")
    add_recipe_arguments(p, defaults)
    p.add_argument("--min-scale", type=float, default=defaults.scale_range[0])
    p.add_argument("--max-scale", type=float, default=defaults.scale_range[1])
    p.add_argument("--train-split", default=defaults.train_split)
    p.add_argument("--val-split", default=defaults.val_split)
    add_run_control_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start_training_run(args)
    if not 0 < args.min_scale <= args.max_scale:
        print(f"error: need 0 < --min-scale <= --max-scale, got {args.min_scale}, {args.max_scale}", file=sys.stderr)
        return 2
    try:
        checkpoint = read_checkpoint(args.model)  # unfused, float32, on the CPU: a fresh copy to train
    except (ModelNotFoundError, CheckpointError, ValueError) as error:
        print(f"pal finetune: {error}", file=sys.stderr)
        return 2
    model = checkpoint.model
    recipe = finetune_recipe(**recipe_options(args), scale_range=(args.min_scale, args.max_scale),
                             train_split=args.train_split, val_split=args.val_split)
    name = args.name or f"{checkpoint.name}_finetuned"
    source = f"fine-tuned by `pal finetune` from {resolve_source(args.model)} on {args.data}"
    try:
        result = train(model, args.data, args.out, recipe, name, checkpoint.preprocess, source,
                       resolve_device(args.device), resume=args.resume, overwrite=args.overwrite,
                       progress=not args.quiet)
    except (DatasetLayoutError, TrainingError) as error:
        print(f"pal finetune: {error}", file=sys.stderr)
        return 2
    print(f"{result.steps} steps, last loss {result.last_loss:.4f}, {result.seconds / 60:.1f} min; "
          f"checkpoints in {result.out} (best.safetensors, last.safetensors)")
    return 0
