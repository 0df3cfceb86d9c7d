"""The `pal` command. Each subcommand lives in its own module with `register(subparsers)`."""

from __future__ import annotations

import argparse
import sys

from . import convert, detect, distill, download, evaluate, finetune, fix, models, prepare_data, rank, run, train

SUBCOMMANDS = [detect, fix, rank, run, models, download, convert, prepare_data, train, finetune, distill, evaluate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pal", description="Find perceptual artifacts in generated images (PAL4VST) and fix them.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
