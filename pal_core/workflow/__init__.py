"""Running saved ComfyUI workflows headless: `pal run`, and `run_workflow` for scripts and tests.

    result = run_workflow("examples/fix.json", input_dir="in", output_dir="out", overrides={"9.seed": 3})
    result.files          # PNGs written
    result.output("4", 0) # what node 4 produced at its first output (a list, as in ComfyUI)

Two engines (engines.py): the built-in runtime here, and ComfyUI's own executor, which a node pack
offers as a plugin (plugins.py). The built-in steps: read (API or UI format, see formats.py) -> apply
overrides -> validate everything (nothing runs if anything is wrong) -> execute the nodes the output
nodes need, once each.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

from . import document, engines, formats, overrides as overrides_module, plugins
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
    "build_registry", "default_input_dir", "installed_registry", "prepare_workflow", "run_workflow",
]


def _read(workflow: str | os.PathLike | Mapping) -> tuple[dict, Path | None]:
    """The document and its folder; a malformed document fails here, whole (document.py), on either engine."""
    if isinstance(workflow, Mapping):
        data, base_dir = dict(workflow), None
    else:
        path = Path(workflow)
        data, base_dir = formats.read_workflow_file(path), path.resolve().parent
    document.check_document(data)
    return data, base_dir


def default_input_dir(base_dir: Path | None) -> Path:
    """Where LoadImage looks when no input folder is given: `input/` beside the workflow file if there is
    one (the examples keep their images there; an API twin in api/ uses its UI file's), else the file's own
    folder, else the current folder."""
    if base_dir is None:
        return Path.cwd()
    return engines.input_folder_beside(base_dir) or base_dir


def _context(base_dir: Path | None, input_dir, output_dir, preview_dir) -> RunContext:
    return RunContext(
        input_dir=Path(input_dir).absolute() if input_dir is not None else default_input_dir(base_dir),
        output_dir=Path(output_dir).absolute() if output_dir is not None else Path.cwd() / "output",
        preview_dir=Path(preview_dir).absolute() if preview_dir is not None else None,
    )


def prepare_workflow(workflow, context: RunContext, overrides=None,
                     registry: Mapping[str, type] | None = None) -> tuple[LoadedWorkflow, ValidatedWorkflow]:
    """Read, override and validate (inside `context`, whose folders some nodes check); runs nothing.
    `registry`: the node classes (default: the core nodes only)."""
    registry = registry if registry is not None else build_registry()
    data, _ = _read(workflow)
    with running(context):
        try:
            loaded = formats.load(data, registry)
            overrides_module.apply(loaded.prompt, overrides, registry)
            validated = validate(loaded.prompt, registry, loaded.hints)
        except WorkflowValidationError as error:
            problems = getattr(registry, "problems", [])
            if error.missing_node_types() and problems:  # say why the pack's nodes are missing
                raise WorkflowValidationError(error.issues + [Issue(None, None, None, "pack_import_failed", p)
                                                              for p in problems]) from None
            raise
        except WorkflowError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError) as error:
            # the checks above name every malformation we know of; this names the rest instead of a traceback
            raise WorkflowFormatError(f"the workflow is malformed and could not be read ({type(error).__name__}: "
                                      f"{error}); nothing was run") from error
    context.prompt = validated.prompt
    context.extra_pnginfo = {"workflow": loaded.ui_workflow} if loaded.ui_workflow is not None else None
    return loaded, validated


def installed_registry(extra_nodes: Mapping[str, type] | None = None) -> NodeRegistry:
    """Core nodes + the classes of every installed node pack (plugins.py) + `extra_nodes`."""
    nodes, problems = plugins.load_node_packs()
    return build_registry(extra_nodes, nodes=nodes, problems=problems)


def run_workflow(workflow: str | os.PathLike | Mapping, input_dir=None, output_dir=None, overrides=None, *,
                 preview_dir=None, engine: str = "auto", comfyui: str | os.PathLike | None = None,
                 models_dir=None, extra_model_paths=(), nodes: Mapping[str, type] | None = None,
                 registry: Mapping[str, type] | None = None, extra_nodes: Mapping[str, type] | None = None,
                 progress: Callable[[str], None] | None = None) -> RunResult:
    """Runs a workflow (a .json file, a PNG saved by ComfyUI, or a dict).

    `engine`: "builtin" (our runtime: core nodes + node packs, no ComfyUI), "comfyui" (ComfyUI's own
    executor in this process: `comfyui` is its folder, else $COMFYUI_PATH, else an importable one) or
    "auto" (comfyui when a ComfyUI is found, else builtin).
    Input files: `input_dir`, else `input/` beside the workflow file, else (builtin) the file's folder or
    (comfyui) ComfyUI's input folder. Outputs: `output_dir`, else ./output (builtin) or ComfyUI's.
    `models_dir`: a folder laid out like ComfyUI's models/; `extra_model_paths`: ComfyUI yaml files.

    Built-in runtime only: `nodes` are the node classes beyond the core ones (default: those of the
    installed node packs), or `registry` gives every class; `extra_nodes` are added.
    Raises WorkflowFormatError, OverrideError, WorkflowValidationError (nothing ran) or
    NodeExecutionError (a node failed; `.partial` holds what had run).
    """
    if engine == "auto" and (registry is not None or nodes is not None or extra_nodes):
        engine = "builtin"  # node classes given: only the built-in runtime takes them
    notes: list[str] = []
    chosen, plugin, comfyui_dir = engines.choose_engine(engine, comfyui, notes)
    if chosen == "comfyui":
        if registry is not None or nodes is not None or extra_nodes:
            raise ValueError("nodes, registry and extra_nodes are for the builtin engine; ComfyUI loads its own "
                             "nodes (core, comfy_extras, custom_nodes/)")
        data, base_dir = _read(workflow)
        job = engines.EngineJob(data, base_dir, _absolute(input_dir), _absolute(output_dir), _absolute(preview_dir),
                                _absolute(models_dir), [Path(p).absolute() for p in extra_model_paths],
                                overrides, progress, comfyui_dir)
        return plugin.run(job)
    if registry is None:
        registry = installed_registry(extra_nodes) if nodes is None else build_registry(extra_nodes, nodes=nodes)
    elif extra_nodes:
        registry = {**dict(registry), **dict(extra_nodes)}
    data, base_dir = _read(workflow)
    context = _context(base_dir, input_dir, output_dir, preview_dir)
    with engines.models_folder(models_dir):
        loaded, validated = prepare_workflow(data, context, overrides, registry)
        result = execute(validated, context, progress)
    result.source_format = loaded.source_format
    result.warnings = notes + list(loaded.warnings) + list(getattr(registry, "problems", []))
    return result


def _absolute(path) -> Path | None:
    return Path(path).absolute() if path is not None else None
