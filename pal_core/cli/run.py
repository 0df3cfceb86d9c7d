"""`pal run`: run a saved ComfyUI workflow (UI or API format) headless."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from ..resources import examples_dir
from ..workflow import (NodeExecutionError, WorkflowError, WorkflowValidationError, build_registry,
                        run_workflow)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run a saved ComfyUI workflow without ComfyUI",
        description="Runs a workflow saved by ComfyUI (Save, or Save (API Format)) with the PAL nodes and "
                    "our implementations of the core nodes it needs (LoadImage, SaveImage, ...). Everything "
                    "is validated first; nothing runs if anything is wrong. Progress goes to stderr, a "
                    "summary to stdout. Exit status: 0 done, 1 a node failed, 2 the workflow is not valid.")
    parser.add_argument("workflow", type=Path, nargs="?",
                        help="workflow .json file (UI or API format), a PNG saved by ComfyUI or `pal run`, or the "
                             "name of a shipped example (--list-examples)")
    parser.add_argument("--input-dir", type=Path,
                        help="folder LoadImage reads from (default: the workflow file's folder)")
    parser.add_argument("--output-dir", type=Path, default=Path("output"),
                        help="folder SaveImage writes to (default: ./output); files are never overwritten")
    parser.add_argument("--preview-dir", type=Path,
                        help="also write PreviewImage images here (default: they are not written)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                        help="change an input for this run, e.g. --set 9.filename_prefix=fixed --set 3.seed=7 "
                             "(numbers and true/false are read as such; repeatable)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--traceback", action="store_true", help="when a node fails, print where in its code")
    parser.add_argument("--list-nodes", action="store_true", help="list the node classes `pal run` can run, and exit")
    parser.add_argument("--list-examples", action="store_true",
                        help="list the example workflows shipped with the project (run one by its name), and exit")
    parser.set_defaults(func=run)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _report_failure(args, error: WorkflowError, status: str) -> None:
    if args.traceback and isinstance(error, NodeExecutionError):
        traceback.print_exception(error.cause, file=sys.stderr)
    print(f"pal run: {error}", file=sys.stderr)
    if args.json:
        record = {"status": status, "error": error.summary, "problems": error.problems}
        if isinstance(error, WorkflowValidationError):
            record["issues"] = [issue.as_dict() for issue in error.issues]
        if isinstance(error, NodeExecutionError):
            record.update(node_id=error.node_id, class_type=error.class_type)
            if error.partial is not None:
                record["files"] = [str(path) for path in error.partial.files]
        print(json.dumps(record, indent=2))


def _list_nodes(registry) -> None:
    for origin, title in (("core", "core nodes (our implementations, ComfyUI's names)"), ("pack", "PAL nodes")):
        names = sorted(name for name, where in registry.origins.items() if where == origin)
        print(f"{title}: {', '.join(names) or 'none'}")
    for problem in registry.problems:
        print(f"note: {problem}")


def _shipped_examples() -> dict[str, Path]:
    folder = examples_dir()
    return {} if folder is None else {p.stem: p for p in sorted(folder.glob("*.json"))}


def _list_examples() -> None:
    examples = _shipped_examples()
    for name in examples:
        print(name)
    if examples:
        print(f"(in {next(iter(examples.values())).parent}; their images in input/ there)")


def _resolve_example(args: argparse.Namespace) -> None:
    """A workflow given by a shipped example's name: its file, and its images unless --input-dir says."""
    given = args.workflow
    if given.exists() or given.suffix or len(given.parts) != 1:
        return
    example = _shipped_examples().get(str(given))
    if example is not None:
        args.workflow = example
        if args.input_dir is None:
            args.input_dir = example.parent / "input"


def run(args: argparse.Namespace) -> int:
    if args.list_examples:
        _list_examples()
        return 0
    registry = build_registry()
    if args.list_nodes:
        _list_nodes(registry)
        return 0
    if args.workflow is None:
        print("pal run: give a workflow file or a shipped example's name (or --list-nodes, --list-examples)",
              file=sys.stderr)
        return 2
    _resolve_example(args)
    try:
        result = run_workflow(args.workflow, input_dir=args.input_dir, output_dir=args.output_dir,
                              overrides=args.overrides, preview_dir=args.preview_dir, registry=registry,
                              progress=None if args.quiet else _progress)
    except NodeExecutionError as error:
        _report_failure(args, error, "failed")
        return 1
    except WorkflowError as error:
        _report_failure(args, error, "invalid")
        return 2
    for warning in result.warnings:
        print(f"pal run: warning: {warning}", file=sys.stderr)
    summary = result.summary()
    summary["workflow"] = str(args.workflow)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for path in result.files:
            print(f"wrote {path}")
        print(f"{len(result.nodes)} nodes ran in {result.seconds:.2f} s; {len(result.files)} file(s) written")
    return 0
