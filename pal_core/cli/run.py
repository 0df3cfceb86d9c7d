"""`pal run`: run a saved ComfyUI workflow (UI or API format) headless."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from ..outputs import check_output_folder
from ..workflow import NodeExecutionError, WorkflowError, WorkflowValidationError, installed_registry, run_workflow
from ..workflow.engines import COMFYUI_ENV, ENGINES
from ..workflow.errors import HostNodeError
from ..workflow.examples import examples_listing, find_example, shipped_examples
from .console import terminal_text


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run a saved ComfyUI workflow headless (our runtime, or ComfyUI's engine in-process)",
        description="Runs a workflow saved by ComfyUI (Save, or Save (API Format)). With ComfyUI (--comfyui DIR, "
                    "$COMFYUI_PATH, or importable) it runs on ComfyUI's own engine in this process, with every "
                    "node ComfyUI has (samplers, checkpoint loaders, custom packs); without, on our built-in "
                    "runtime: the PAL nodes and our implementations of the core nodes they need (LoadImage, "
                    "SaveImage, ...). Everything is validated first; nothing runs if anything is wrong. Progress "
                    "goes to stderr, a summary to stdout. Exit status: 0 done, 1 a node failed, 2 the workflow "
                    "is not valid (or cannot run here).")
    parser.add_argument("workflow", type=Path, nargs="?",
                        help="workflow .json file (UI or API format), a PNG saved by ComfyUI or `pal run`, or the "
                             "name of a shipped example (--list-examples; its earlier names work too)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="comfyui: ComfyUI's executor; builtin: our runtime; auto (default): comfyui when a "
                             "ComfyUI is found, else builtin")
    parser.add_argument("--comfyui", type=Path, metavar="DIR",
                        help=f"ComfyUI's folder (the one with main.py); default ${COMFYUI_ENV}, else an importable "
                             "ComfyUI. Run pal from ComfyUI's Python environment")
    parser.add_argument("--input-dir", type=Path,
                        help="folder LoadImage reads from (default: input/ beside the workflow file if there is one, "
                             "else the workflow's folder (builtin) or ComfyUI's input folder (comfyui))")
    parser.add_argument("--output-dir", type=Path,
                        help="folder SaveImage writes to (default: ./output (builtin) or ComfyUI's output folder); "
                             "files are never overwritten")
    parser.add_argument("--preview-dir", type=Path,
                        help="also write PreviewImage images here (default: they are not kept)")
    parser.add_argument("--models-dir", type=Path, metavar="DIR",
                        help="a folder laid out like ComfyUI's models/ (checkpoints/, pal4vst/, ...), searched "
                             "first")
    parser.add_argument("--extra-model-paths", type=Path, action="append", default=[], metavar="YAML",
                        help="comfyui engine: an extra_model_paths.yaml to load (repeatable; ComfyUI's own "
                             "extra_model_paths.yaml is always loaded)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE_ID.INPUT=VALUE",
                        help="change an input for this run, e.g. --set 9.filename_prefix=fixed --set 3.seed=7 "
                             "(numbers and true/false are read as such; repeatable)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--traceback", action="store_true", help="when a node fails, print where in its code")
    parser.add_argument("--list-nodes", action="store_true",
                        help="list the node classes the built-in runtime can run, and exit")
    parser.add_argument("--list-examples", action="store_true",
                        help="list the example workflows shipped with the project (run one by its name), and exit")
    parser.set_defaults(func=run)


# A workflow is untrusted text: its node ids, class names and prefixes reach these lines, so every control
# character in them is shown escaped, and a line break inside a value cannot start a line of its own.
CONTINUED = "\n    "  # a line break inside a message: indented, so it never looks like a line of pal's


def _progress(line: str) -> None:
    print(terminal_text(line, newline=None), file=sys.stderr, flush=True)


def _say(message: str) -> None:
    print(f"pal run: {terminal_text(message, newline=CONTINUED)}", file=sys.stderr)


def _report_failure(args, error: WorkflowError, status: str) -> None:
    if args.traceback and isinstance(error, NodeExecutionError):
        if isinstance(error.cause, HostNodeError):  # the node ran in ComfyUI, which keeps the traceback as text
            print(error.cause.traceback_text, file=sys.stderr, end="")
        else:
            traceback.print_exception(error.cause, file=sys.stderr)
    message = terminal_text(error.summary, newline=CONTINUED)
    if error.problems:
        message += ":\n  " + "\n  ".join(terminal_text(problem, newline=None) for problem in error.problems)
    print(f"pal run: {message}", file=sys.stderr)
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


def _list_examples() -> None:
    examples = shipped_examples()
    for name in examples:
        print(name)
    if examples:
        print(f"(in {next(iter(examples.values())).parent}; their images in input/ there)")


def _resolve_example(args: argparse.Namespace) -> str | None:
    """A workflow given by a shipped example's name (or an earlier name of it): its file, whose images are in
    input/ beside it. Returns why nothing can be run when the workflow is neither a file nor an example."""
    given = args.workflow
    if given.exists():
        return None
    found = find_example(str(given)) if len(given.parts) == 1 else None
    if found is not None:
        args.workflow, current = found
        if current != given.name.removesuffix(".json"):
            print(f"pal run: '{given}' is now called '{current}'", file=sys.stderr)
        return None
    return (f"no such workflow file or example: {given}\nThe examples shipped with the project (run one by its "
            f"name, e.g. pal run \"{next(iter(shipped_examples()), 'NAME')}\"; pal run --list-examples says where "
            f"they are):\n{examples_listing()}")


def run(args: argparse.Namespace) -> int:
    if args.list_examples:
        _list_examples()
        return 0
    if args.list_nodes:
        _list_nodes(installed_registry())
        return 0
    if args.workflow is None:
        print("pal run: give a workflow file or a shipped example's name (or --list-nodes, --list-examples)",
              file=sys.stderr)
        return 2
    for option, folder in (("--output-dir", args.output_dir), ("--preview-dir", args.preview_dir)):
        problem = check_output_folder(folder, option) if folder is not None else None
        if problem:
            _say(f"{problem}; nothing was run")
            return 2
    missing = _resolve_example(args)
    if missing:
        first, _, listing = missing.partition("\n")
        _say(first)  # the name given is anyone's text; the listing below is our examples' names
        print(listing, file=sys.stderr)
        if args.json:
            print(json.dumps({"status": "invalid", "error": missing.splitlines()[0], "problems": [],
                              "examples": list(shipped_examples())}, indent=2))
        return 2
    try:
        result = run_workflow(args.workflow, input_dir=args.input_dir, output_dir=args.output_dir,
                              overrides=args.overrides, preview_dir=args.preview_dir, engine=args.engine,
                              comfyui=args.comfyui, models_dir=args.models_dir,
                              extra_model_paths=args.extra_model_paths,
                              progress=None if args.quiet else _progress)
    except NodeExecutionError as error:
        _report_failure(args, error, "failed")
        return 1
    except WorkflowError as error:
        _report_failure(args, error, "invalid")
        return 2
    for warning in result.warnings:
        _say(f"warning: {warning}")
    summary = result.summary()
    summary["workflow"] = str(args.workflow)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for path in result.files:
            print(f"wrote {terminal_text(path, newline=None)}")
        print(f"{len(result.nodes)} nodes ran in {result.seconds:.2f} s on the {result.engine} engine; "
              f"{len(result.files)} file(s) written")
    return 0
