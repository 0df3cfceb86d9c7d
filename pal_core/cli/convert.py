"""`pal convert`: any loadable weights file (e.g. an official mmseg .pth) to our .safetensors format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..hub.checkpoint import CheckpointError, save_detector_file
from ..hub.loading import ModelNotFoundError, read_checkpoint


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
        print(f"pal convert: {args.destination} already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        checkpoint = read_checkpoint(args.source)
        checkpoint.name = args.name or args.destination.stem
        checkpoint.source = checkpoint.source or f"converted from {Path(args.source).name}"
        save_detector_file(checkpoint, args.destination, overwrite=args.overwrite)
    except (ModelNotFoundError, CheckpointError, FileExistsError) as error:
        print(f"pal convert: {error}", file=sys.stderr)
        return 2
    config = checkpoint.model.config.to_dict()
    print(f"wrote {args.destination} ({checkpoint.model.architecture}, "
          f"{sum(p.numel() for p in checkpoint.model.parameters()) / 1e6:.1f} M parameters, config {config})")
    return 0
