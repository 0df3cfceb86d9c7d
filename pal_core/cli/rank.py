"""`pal rank`: score image sets by PAR, resumably, and sort them best first (logic in pal_core.rank.ranking)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..imageio import write_png
from ..outputs import check_output_file, check_output_folder, describe_os_error
from ..rank.ranking import RankSettings, check_inputs, parse_shard, rank_images
from ..rank.scores import (ScoreFileError, check_record_file, export_format, export_ranking, rank_records, record_lock,
                           records_path_for, require_pyarrow)
from ..rank.selection import SheetLayout, contact_sheet, copy_best, select_best
from .common import add_model_arguments, add_threshold_argument, load_detector_from_args
from .console import progress_bar

DEFAULT_OUT = "scores.jsonl"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "rank", help="score image sets by PAR and sort them best first (resumable)",
        description="Scores images by PAR (the share of artifact pixels) and writes them sorted, best "
                    "(lowest PAR) first. Results are appended as they come, so re-running the same command "
                    "after a crash or Ctrl-C skips what is done. Unreadable files are recorded with their "
                    "error and sort last. For .csv/.parquet outputs the working record is "
                    "<out>.records.jsonl beside it.")
    parser.add_argument("paths", nargs="*", help="image files, folders (searched recursively) or glob patterns "
                                                 "(quote them: 'out/**/*.png')")
    add_model_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                        help=f"scores file, .jsonl, .csv or .parquet (default {DEFAULT_OUT})")
    add_threshold_argument(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="images per network call (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="image-decoding threads (default 2; 0: none)")
    parser.add_argument("--top-k", type=int, help="select the K best images (for --copy-best, --sheet, stdout)")
    parser.add_argument("--max-par", type=float, help="select only images with PAR at most this")
    parser.add_argument("--copy-best", type=Path, metavar="DIR",
                        help="copy the selection into DIR as <rank>_<name>; existing files are never replaced")
    parser.add_argument("--sheet", type=Path, help="PNG contact sheet of the selection (artifacts tinted)")
    parser.add_argument("--sheet-limit", type=int, default=64, help="most images on the sheet (default 64)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --sheet file, or a .csv/.parquet --out that no pal rank run made")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="score only shard I of N (0-based; a stable hash of each path). Give each shard "
                             "its own --out, then combine them with --merge")
    parser.add_argument("--retry-errors", action="store_true", help="try again the images that failed before")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="RECORDS",
                        help="sort these record files (e.g. one per shard) into --out instead of scoring")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="score on Ray Data ('local' starts Ray here, 'auto' joins a running cluster)")
    parser.add_argument("--ray-actors", type=int, default=1, help="detector copies on Ray (default 1)")
    parser.add_argument("--ray-gpus", type=float, default=0, help="GPUs per Ray actor (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (in a log: no progress lines)")
    parser.set_defaults(func=run)


def fail(message: str) -> int:
    print(f"pal rank: {message}", file=sys.stderr)
    return 2


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Everything that can be wrong with the arguments, found before any work starts."""
    problems = []
    if bool(args.paths) == bool(args.merge):
        problems.append("give image paths to score, or --merge RECORDS to combine record files (not both)")
    for name, value, ok, rule in [
        ("--top-k", args.top_k, args.top_k is None or args.top_k >= 1, "at least 1"),
        ("--max-par", args.max_par, args.max_par is None or 0.0 <= args.max_par <= 1.0, "in [0, 1]"),
        ("--sheet-limit", args.sheet_limit, args.sheet_limit >= 1, "at least 1"),
        ("--ray-actors", args.ray_actors, args.ray_actors >= 1, "at least 1"),
    ]:
        if not ok:
            problems.append(f"{name} must be {rule}, not {value}")
    try:
        args.settings = RankSettings(batch_size=args.batch_size, workers=args.workers, threshold=args.threshold,
                                     shard=parse_shard(args.shard), retry_errors=args.retry_errors)
    except ValueError as error:
        problems.append(str(error))
    try:
        if export_format(args.out) == "parquet":
            require_pyarrow()
    except ScoreFileError as error:
        problems.append(str(error))
    if args.ray is not None:
        from ..rank.ray_ranking import require_ray
        try:
            require_ray()
        except ImportError as error:
            problems.append(str(error))
    if args.copy_best is not None and args.top_k is None and args.max_par is None:
        problems.append("--copy-best needs --top-k K or --max-par X (otherwise it would copy every image)")
    if args.sheet is not None:
        if args.sheet.suffix.lower() != ".png":
            problems.append(f"--sheet must be a .png file, not {args.sheet}")
        elif args.sheet.exists() and not args.overwrite:
            problems.append(f"{args.sheet} already exists (pass --overwrite to replace it)")
    problems += check_inputs(args.paths)
    for record_file in args.merge or []:
        if record_file.suffix.lower() != ".jsonl":
            problems.append(f"--merge takes JSONL record files, not {record_file} (for a .csv or .parquet "
                            "output, its record is the <out>.records.jsonl beside it)")
        elif not record_file.is_file():
            problems.append(f"{record_file}: no such record file")
        else:
            problems.append(check_record_file(record_file))
    if not problems:  # the output places, once the names are known to be right
        problems += check_output_places(args)
    return [p for p in problems if p]


def check_output_places(args: argparse.Namespace) -> list[str | None]:
    """Every file this run would write or replace: usable, and nothing replaced that pal rank did not make."""
    records = records_path_for(args.out)
    problems = [check_output_file(args.out, "--out")]
    if args.paths:
        problems.append(check_record_file(records))
        if records != args.out and args.out.exists() and not records.exists() and not args.overwrite:
            problems.append(f"{args.out} already exists and no pal rank run made it (there is no {records.name} "
                            "beside it); pass --overwrite to replace it, or give another --out")
    elif args.out.exists() and not args.overwrite and not any(
            args.out.resolve() == source.resolve() for source in args.merge):
        problems.append(f"{args.out} already exists and is not one of the --merge files; pass --overwrite to "
                        "replace it, or give another --out")
    if args.copy_best is not None:
        problems.append(check_output_folder(args.copy_best, "--copy-best"))
    if args.sheet is not None:
        problems.append(check_output_file(args.sheet, "--sheet"))
        if any(_inside(args.sheet, Path(item)) for item in args.paths):
            problems.append(f"--sheet {args.sheet} is one of the images being ranked (or inside a folder being "
                            "ranked); write it elsewhere")
    return problems


def _inside(path: Path, item: Path) -> bool:
    """Whether `path` is the input `item` or inside the input folder `item`."""
    try:
        resolved, root = path.resolve(), item.resolve()
    except (OSError, ValueError):
        return False
    return resolved == root or (root.is_dir() and root in resolved.parents)


def run(args: argparse.Namespace) -> int:
    problems = check_arguments(args)
    if problems:
        return fail("nothing was done:\n  " + "\n  ".join(problems))
    records_path = records_path_for(args.out)
    try:
        with record_lock(records_path):  # held until the sorted file is in place and the selection made
            return rank_and_export(args, records_path)
    except ValueError as error:  # ScoreFileError, or a detector that gave NaN probabilities (NonFiniteOutputError)
        return fail(str(error))
    except OSError as error:
        print(f"pal rank: could not write the results ({describe_os_error(error)}); the scores so far are in "
              f"{records_path}: free space or fix the folder, then run the same command again", file=sys.stderr)
        return 1


def rank_and_export(args: argparse.Namespace, records_path: Path) -> int:
    detector = None
    if args.paths:
        detector = load_detector_from_args(args)
        if detector is None:
            return 2
        try:
            summary = score(args, detector, records_path)
        except KeyboardInterrupt:
            print(f"pal rank: interrupted; every finished batch is in {records_path}. "
                  "Run the same command again to continue", file=sys.stderr)
            return 130
        report_summary(summary, records_path)
        sources = [records_path]
    else:
        sources = args.merge
    ranking = rank_records(sources)
    export_ranking(ranking, args.out)
    if any(args.out.resolve() == Path(source).resolve() for source in sources):
        ranking = rank_records([args.out])  # the sorted file replaced a source: the old line offsets are gone
    print(f"pal rank: {ranking.scored} images ranked, {len(ranking) - ranking.scored} unreadable, "
          f"written to {args.out}", file=sys.stderr)
    return use_selection(args, ranking, detector)


def score(args: argparse.Namespace, detector, records_path: Path):
    settings = args.settings
    with progress_bar("rank", hidden=args.no_progress) as bar:  # in a log: a line every 30 s
        def set_total(total: int) -> None:
            bar.total = total
            bar.refresh()

        if args.ray is None:
            return rank_images(detector, args.paths, records_path, settings, progress=bar.update, on_total=set_total)
        from ..rank.ray_ranking import rank_with_ray
        return rank_with_ray(args.paths, records_path, args.model, settings, device=args.device, dtype=args.dtype,
                             input_size=args.input_size, trust_code=args.allow_torchscript, actors=args.ray_actors, gpus_per_actor=args.ray_gpus,
                             address=None if args.ray == "local" else args.ray, progress=bar.update,
                             on_total=set_total)


def report_summary(summary, records_path: Path) -> None:
    parts = [f"{summary.scored} scored", f"{summary.failed} unreadable", f"{summary.skipped} already in {records_path}"]
    if summary.other_shards:
        parts.append(f"{summary.other_shards} left to other shards")
    if summary.repaired_bytes:
        parts.append(f"a torn last line ({summary.repaired_bytes} bytes) from an earlier crash was removed")
    print("pal rank: " + ", ".join(parts), file=sys.stderr)
    for error in summary.errors:
        print(f"pal rank: unreadable: {error}", file=sys.stderr)


def use_selection(args: argparse.Namespace, ranking, detector) -> int:
    """Prints the selection (when one was asked for), copies it and draws the sheet."""
    selecting = args.top_k is not None or args.max_par is not None
    if selecting:
        for record in select_best(ranking, args.top_k, args.max_par):
            print(json.dumps(record, ensure_ascii=False))
    code = 0
    if args.copy_best is not None:
        report = copy_best(select_best(ranking, args.top_k, args.max_par), args.copy_best)
        print(f"pal rank: copied {len(report.copied)} images to {args.copy_best}", file=sys.stderr)
        if report.existing:
            print(f"pal rank: {len(report.existing)} files were already in {args.copy_best} and were left as "
                  f"they are (e.g. {report.existing[0].name}); use an empty folder for a fresh copy", file=sys.stderr)
        for failure in report.failed:
            print(f"pal rank: could not copy {failure}", file=sys.stderr)
        code = 1 if report.existing or report.failed else 0
    if args.sheet is not None:
        code = max(code, draw_sheet(args, ranking, detector))
    return code


def draw_sheet(args: argparse.Namespace, ranking, detector) -> int:
    if detector is None:  # --merge: the masks need a model
        detector = load_detector_from_args(args)
        if detector is None:
            return 2
    records = list(select_best(ranking, min(args.top_k or args.sheet_limit, args.sheet_limit), args.max_par))
    if not records:
        print("pal rank: no image is selected, so no sheet was drawn", file=sys.stderr)
        return 1
    write_png(args.sheet, contact_sheet(detector, records, args.threshold, SheetLayout()), overwrite=args.overwrite)
    print(f"pal rank: contact sheet of the best {len(records)} written to {args.sheet}", file=sys.stderr)
    return 0
