"""`pal convert`: any loadable weights file (e.g. an official mmseg .pth) to our .safetensors format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..hub.checkpoint import CheckpointError, save_detector_file
from ..hub.loading import ModelNotFoundError, read_checkpoint
from ..outputs import check_output_file, describe_os_error


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a detector checkpoint (mmseg .pth) to .safetensors",
        description="Reads a detector checkpoint (an mmsegmentation .pth such as the official PAL4VST "
                    "release, or one of our .safetensors) and writes our .safetensors format, which "
                    "loads without unpickling and carries its architecture and preprocessing.")
    parser.add_argument("source", help="checkpoint to convert")
    parser.add_argument("destination", type=Path, help="output file, ending in .safetensors")
    parser.add_argument("--name", help="model name stored in the file (default: the output file's stem)")
    parser.add_argument("--overwrite", action="store_true", help="replace the destination if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.destination.exists() and not args.overwrite:
        return _fail(f"{args.destination} already exists; pass --overwrite to replace it")
    if args.destination.suffix != ".safetensors":
        return _fail(f"{args.destination}: detector files are written as .safetensors; name it "
                     f"{args.destination.stem}.safetensors")
    if (problem := check_output_file(args.destination, "the destination")) is not None:  # before reading the source
        return _fail(f"{problem}; choose another destination")
    try:
        checkpoint = read_checkpoint(args.source)
        checkpoint.name = args.name or args.destination.stem
        checkpoint.source = checkpoint.source or f"converted from {Path(args.source).name}"
        save_detector_file(checkpoint, args.destination, overwrite=args.overwrite)
    except (ModelNotFoundError, CheckpointError, FileExistsError, ValueError) as error:
        return _fail(str(error))
    except OSError as error:
        return _fail(f"could not write {args.destination} ({describe_os_error(error)}); nothing was written. "
                     "Choose another destination, or free space, then run again")
    config = checkpoint.model.config.to_dict()
    print(f"wrote {args.destination} ({checkpoint.model.architecture}, "
          f"{sum(p.numel() for p in checkpoint.model.parameters()) / 1e6:.1f} M parameters, config {config})")
    return 0


def _fail(message: str) -> int:
    print(f"pal convert: {message}", file=sys.stderr)
    return 2
