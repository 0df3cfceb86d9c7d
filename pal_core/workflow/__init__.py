"""Running saved ComfyUI workflows without ComfyUI: `pal run`, and `run_workflow` for scripts and tests.

    result = run_workflow("examples/fix.json", input_dir="in", output_dir="out", overrides={"9.seed": 3})
    result.files          # PNGs written
    result.output("4", 0) # what node 4 produced at its first output (a list, as in ComfyUI)

Steps: read (API or UI format, see formats.py) -> apply overrides -> validate everything (nothing runs
if anything is wrong) -> execute the nodes the output nodes need, once each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

from . import formats, overrides as overrides_module
from .context import RunContext, running
from .errors import Issue, NodeExecutionError, WorkflowError, WorkflowFormatError, WorkflowValidationError
from .executor import NodeRecord, RunResult, execute
from .formats import LoadedWorkflow
from .overrides import OverrideError
from .registry import NodeRegistry, build_registry
from .validation import ValidatedWorkflow, validate

__all__ = [
    "Issue", "LoadedWorkflow", "NodeExecutionError", "NodeRecord", "NodeRegistry", "OverrideError",
    "RunResult", "ValidatedWorkflow", "WorkflowError", "WorkflowFormatError", "WorkflowValidationError",
    "build_registry", "prepare_workflow", "run_workflow",
]


def _read(workflow: str | os.PathLike | Mapping) -> tuple[dict, Path | None]:
    if isinstance(workflow, Mapping):
        return dict(workflow), None
    path = Path(workflow)
    return formats.read_json(path), path.resolve().parent


def _context(base_dir: Path | None, input_dir, output_dir, preview_dir) -> RunContext:
    return RunContext(
        input_dir=Path(input_dir) if input_dir is not None else (base_dir or Path.cwd()),
        output_dir=Path(output_dir) if output_dir is not None else Path.cwd() / "output",
        preview_dir=Path(preview_dir) if preview_dir is not None else None,
    )


def prepare_workflow(workflow, context: RunContext, overrides=None,
                     registry: Mapping[str, type] | None = None) -> tuple[LoadedWorkflow, ValidatedWorkflow]:
    """Read, override and validate (inside `context`, whose folders some nodes check); runs nothing."""
    registry = registry if registry is not None else build_registry()
    data, _ = _read(workflow)
    with running(context):
        loaded = formats.load(data, registry)
        overrides_module.apply(loaded.prompt, overrides, registry)
        try:
            validated = validate(loaded.prompt, registry, loaded.hints)
        except WorkflowValidationError as error:
            problems = getattr(registry, "problems", [])
            if error.missing_node_types() and problems:  # say why the pack's nodes are missing
                raise WorkflowValidationError(error.issues + [Issue(None, None, None, "pack_import_failed", p)
                                                              for p in problems]) from None
            raise
    context.prompt = validated.prompt
    context.extra_pnginfo = {"workflow": loaded.ui_workflow} if loaded.ui_workflow is not None else None
    return loaded, validated


def run_workflow(workflow: str | os.PathLike | Mapping, input_dir=None, output_dir=None, overrides=None, *,
                 preview_dir=None, registry: Mapping[str, type] | None = None,
                 extra_nodes: Mapping[str, type] | None = None,
                 progress: Callable[[str], None] | None = None) -> RunResult:
    """Runs a workflow file or dict. Input files are looked up in `input_dir`, else beside the workflow
    file (else the current folder); outputs go to `output_dir` (default ./output).

    `registry`: the node classes to use (default: core nodes + the PAL node pack); `extra_nodes` are
    added to it. Raises WorkflowFormatError, OverrideError, WorkflowValidationError (nothing ran) or
    NodeExecutionError (a node failed; `.partial` holds what had run).
    """
    if registry is None:
        registry = build_registry(extra_nodes)
    elif extra_nodes:
        registry = {**dict(registry), **dict(extra_nodes)}
    data, base_dir = _read(workflow)
    context = _context(base_dir, input_dir, output_dir, preview_dir)
    loaded, validated = prepare_workflow(data, context, overrides, registry)
    result = execute(validated, context, progress)
    result.source_format = loaded.source_format
    result.warnings = list(loaded.warnings) + list(getattr(registry, "problems", []))
    return result
