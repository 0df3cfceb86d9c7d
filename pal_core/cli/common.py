"""Arguments and error handling shared by the subcommands that run a detector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..detect.detector import Detector
from ..detect.devices import PRECISIONS
from ..detect.masks import DEFAULT_THRESHOLD
from ..hub.checkpoint import CheckpointError
from ..hub.download import DownloadError
from ..hub.loading import MODEL_INPUT_SIZE, ModelNotFoundError, load_detector
from ..outputs import check_output_file, same_file


def parse_input_size(value: str) -> int | None | str:
    """'native' (or 'none') runs the network at each image's own size, 'model' at the size saved in
    the model file; else a square size in pixels."""
    if value.lower() in ("native", "none"):
        return None
    if value.lower() == MODEL_INPUT_SIZE:
        return MODEL_INPUT_SIZE
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-size must be a number of pixels or 'native' or 'model', not {value!r}")
    if size < 32:
        raise argparse.ArgumentTypeError(f"--input-size must be at least 32, not {size}")
    return size


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file (.safetensors, mmseg .pth, TorchScript .pt) or a catalogue "
                                        "name (pal4vst-unified, pal4vst-stylegan2, pal4vst-shadow, pal-lite: see "
                                        "`pal models`); default: pal4vst-unified when installed, else pal-lite")
    parser.add_argument("--download", action="store_true",
                        help="download the --model catalogue model first if it is not installed (pal download)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--precision", "--dtype", dest="dtype", default="auto", choices=PRECISIONS,
                        help="precision of the network: auto (default) picks the fastest the device runs natively "
                             "(bf16 on CPUs with AMX/AVX512-BF16 and on recent GPUs, else fp16 on GPUs, else fp32); "
                             "fp32 for exact reference results; fp16 needs CUDA")
    parser.add_argument("--input-size", default=MODEL_INPUT_SIZE, type=parse_input_size,
                        help="square size the network runs at: 'model' (default: the size saved in the model file, "
                             "PAL4VST's 512), a number of pixels, or 'native' for each image's own size")
    parser.add_argument("--allow-torchscript", action="store_true",
                        help="let a TorchScript --model whose weights cannot be read as data run as the program it "
                             "is (its code can read and write your files): only for files you trust")


def load_detector_from_args(args: argparse.Namespace) -> Detector | None:
    """The detector the arguments ask for, or None after printing why it could not be loaded."""
    try:
        return load_detector(args.model, device=args.device, dtype=args.dtype, input_size=args.input_size,
                             batch_size=getattr(args, "batch_size", 8), download=args.download,
                             trust_code=args.allow_torchscript)
    except (ModelNotFoundError, CheckpointError, DownloadError, ValueError) as error:
        print(f"pal {args.command}: {error}", file=sys.stderr)
        return None


def add_threshold_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"probability above which a pixel is an artifact (default: {DEFAULT_THRESHOLD})")


def add_run_control_arguments(parser: argparse.ArgumentParser) -> None:
    """How a training run is run (not what it learns): shared by `pal train` and `pal finetune`."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA if available)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out with its saved recipe (recipe options given now are ignored)")
    parser.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def start_training_run(args: argparse.Namespace) -> None:
    """Applies `--threads` and `--seed` before anything random or parallel happens."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


SHEET_MAX_ROWS = 64  # a contact sheet beyond this many images is too large to look at


def sheet_problem(sheet: Path, overwrite: bool, inputs: list[Path] = ()) -> str | None:
    """Why --sheet cannot be written (checked before any work), or None. It may never be an input."""
    if sheet.suffix.lower() != ".png":
        return f"--sheet must be a .png file, not {sheet}"
    if any(same_file(sheet, source) for source in inputs if sheet.exists()):
        return f"--sheet {sheet} is one of the input images; write it elsewhere"
    if sheet.exists() and not overwrite:
        return f"{sheet} already exists (pass --overwrite to replace it)"
    return check_output_file(sheet, "--sheet")


RECIPE_OPTIONS = ("steps", "batch_size", "crop_size", "lr", "head_lr_mult", "weight_decay", "warmup_steps",
                  "dice_weight", "val_every", "val_limit", "save_every", "workers", "seed")


def add_recipe_arguments(parser: argparse.ArgumentParser, recipe) -> None:
    """The training-recipe options of `pal train`, `pal finetune` and `pal distill`, defaulting to `recipe`'s
    values (each command's recipe function is the one home of its defaults)."""
    parser.add_argument("--steps", type=int, default=recipe.steps)
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--crop-size", type=int, default=recipe.crop_size)
    parser.add_argument("--lr", type=float, default=recipe.lr, help="encoder learning rate (decoder: x --head-lr-mult)")
    parser.add_argument("--head-lr-mult", type=float, default=recipe.head_lr_mult)
    parser.add_argument("--weight-decay", type=float, default=recipe.weight_decay)
    parser.add_argument("--warmup-steps", type=int, default=recipe.warmup_steps,
                        help="linear warm-up, then poly decay")
    parser.add_argument("--dice-weight", type=float, default=recipe.dice_weight,
                        help="weight of soft Dice added to the cross entropy (0: the paper's loss alone)")
    parser.add_argument("--val-every", type=int, default=recipe.val_every)
    parser.add_argument("--val-limit", type=int, default=recipe.val_limit, help="validate on at most this many images")
    parser.add_argument("--save-every", type=int, default=recipe.save_every)
    parser.add_argument("--workers", type=int, default=recipe.workers, help="data-loading processes")
    parser.add_argument("--seed", type=int, default=recipe.seed)


def recipe_options(args: argparse.Namespace) -> dict:
    """The values of `add_recipe_arguments`' options, as keyword arguments of a training Recipe."""
    return {name: getattr(args, name) for name in RECIPE_OPTIONS}
