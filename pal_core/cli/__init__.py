"""The `pal` command. Each subcommand lives in its own module with `register(subparsers)`.

Only the module of the command being run is imported: the others need torch, OpenCV or diffusers,
and importing them all made `pal --help` take seconds. `pal --help` lists the commands from
SUMMARIES (tests/test_cli_startup.py checks they are each module's own help line).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> module in this package, in the order `pal --help` lists them
COMMANDS = {
    "detect": "detect", "fix": "fix", "rank": "rank", "run": "run", "models": "models", "download": "download",
    "convert": "convert", "prepare-data": "prepare_data", "train": "train", "finetune": "finetune",
    "distill": "distill", "eval": "evaluate",
}


def _download_summary() -> str:
    from ..hub import catalogue  # light: no torch
    official = [e.name for e in catalogue.ENTRIES if e.drive_id]
    return "download an official PAL4VST model (" + ", ".join(official) + ")"


SUMMARIES = {
    "detect": "find artifacts in images (probability, mask, PAR)",
    "fix": "repaint detected artifacts through zoomed-in crops",
    "rank": "score image sets by PAR and sort them best first (resumable)",
    "run": "run a saved ComfyUI workflow headless (our runtime, or ComfyUI's engine in-process)",
    "models": "list the model catalogue (installed or not); add a file fetched by hand",
    "download": None,  # names the catalogue's official models: _download_summary()
    "convert": "convert a detector checkpoint (mmseg .pth) to .safetensors",
    "prepare-data": "make the synthetic artifact dataset for `pal train`",
    "train": "train the small default detector on synthetic artifacts",
    "finetune": "fine-tune a detector on labelled data (PAL4VST layout)",
    "distill": "train a fast student that reproduces a detector on your images",
    "eval": "IoU / mIoU of a detector on a labelled dataset, per task",
}


def command_module(command: str):
    return importlib.import_module(f"{__name__}.{COMMANDS[command]}")


def _summary(command: str) -> str:
    return SUMMARIES[command] or _download_summary()


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(commands=None) -> argparse.ArgumentParser:
    """The parser; `commands` (default: all) get their full arguments, the others only their name and help."""
    full = set(COMMANDS if commands is None else commands)
    parser = argparse.ArgumentParser(
        prog="pal", description="Find perceptual artifacts in generated images (PAL4VST) and fix them.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if command in full:
            command_module(command).register(sub)
        else:
            sub.add_parser(command, help=_summary(command))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen_command(argv)
    args = build_parser([chosen] if chosen else []).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
