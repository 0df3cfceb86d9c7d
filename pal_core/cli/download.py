"""`pal download NAME`: fetch an official PAL4VST checkpoint from its authors' link and install it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..hub import catalogue, model_store
from ..hub.download import DownloadError, download_model


def register(subparsers) -> None:
    official = [e.name for e in catalogue.ENTRIES if e.drive_id]
    parser = subparsers.add_parser(
        "download", help="download an official PAL4VST model (" + ", ".join(official) + ")",
        description="Downloads the authors' checkpoint (Google Drive), resuming a partial file, checks that it "
                    "is the expected network (every key and shape), converts it to .safetensors and records its "
                    "sha256. When the .pth cannot be used, the authors' TorchScript export of the same model is "
                    "tried (its weights are read as data, its program never runs).")
    parser.add_argument("name", choices=official, metavar="NAME", help="one of: " + ", ".join(official))
    parser.add_argument("--dir", type=Path, help=f"install here instead of {model_store.install_folder()}")
    parser.add_argument("--overwrite", action="store_true",
                        help="download again even when installed (a part received earlier is discarded too)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        entry = catalogue.get(args.name)
    except ValueError as error:  # a bad $PAL_CATALOGUE
        print(f"pal download: {error}", file=sys.stderr)
        return 2
    print(f"{args.name}: {entry.origin}\n  from {entry.page}", file=sys.stderr)
    folder = args.dir or model_store.install_folder()
    existing = folder / entry.file_name
    if existing.is_file() and not args.overwrite:
        print(f"{args.name} is already installed: {existing} (`pal models --verify` checks it; --overwrite "
              "downloads it again)")
        return 0
    try:
        path = download_model(args.name, folder, overwrite=args.overwrite, show_progress=not args.no_progress,
                              say=lambda line: print(f"pal download: {line}", file=sys.stderr, flush=True))
    except (DownloadError, ValueError) as error:
        print(f"pal download: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pal download: interrupted; the part received is kept in {folder}: run the same command again to "
              "resume", file=sys.stderr)
        return 130
    print(f"installed {args.name}: {path} (sha256 recorded in {model_store.checksum_path(path).name})")
    say_where_it_loads_from(args.name, folder, path)
    return 0


def say_where_it_loads_from(name: str, folder: Path, path: Path) -> None:
    """After an install: whether `--model NAME` finds it, and whether it is now the default."""
    if folder.resolve() not in [f.resolve() for f in model_store.model_folders()]:
        print(f"note: {folder} is not among the folders searched for models ({model_store.home_folder()} ...): "
              f"use --model {path}", file=sys.stderr)
    elif name == catalogue.PREFERRED:
        print("it is now the default model")
    else:
        print(f"use it with --model {name}")
