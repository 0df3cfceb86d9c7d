"""Running a validated workflow: each needed node once, after its inputs, with ComfyUI's list semantics.

Outputs are kept as ComfyUI keeps them: for every output slot, a list with one item per call (or the
items of every call's list, for an OUTPUT_IS_LIST slot). A node function may return a tuple, or a dict
{"ui": {...}, "result": (...)}; node expansion ({"expand": graph}) needs ComfyUI and is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .context import RunContext, running
from .errors import NodeExecutionError
from .lists import call_over_lists
from .specs import NodeSpec
from .validation import ValidatedWorkflow, is_link


class NodeContractError(RuntimeError):
    """A node returned something its declarations do not allow."""


@dataclass
class NodeRecord:
    node_id: str
    class_type: str
    seconds: float
    calls: int
    outputs: list[list]  # per output slot, the list of values
    ui: dict


@dataclass
class RunResult:
    prompt: dict
    order: list[str]
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    source_format: str = "api"
    engine: str = "builtin"  # or "comfyui"

    def output(self, node_id: str | int, slot: int = 0) -> list:
        """The values a node produced at an output slot (a list: one item per call, or list items)."""
        return self.nodes[str(node_id)].outputs[slot]

    def ui(self, node_id: str | int) -> dict:
        return self.nodes[str(node_id)].ui

    def summary(self) -> dict:
        """JSON-ready: files written and the time of each node."""
        return {
            "status": "ok",
            "engine": self.engine,
            "format": self.source_format,
            "files": [str(path) for path in self.files],
            "nodes": [{"id": record.node_id, "class_type": record.class_type, "seconds": round(record.seconds, 4),
                       "calls": record.calls} for record in self.nodes.values()],
            "seconds": round(self.seconds, 4),
            "warnings": list(self.warnings),
        }


def execute(workflow: ValidatedWorkflow, context: RunContext,
            progress: Callable[[str], None] | None = None) -> RunResult:
    result = RunResult(workflow.prompt, list(workflow.order))
    instances: dict[str, object] = {}
    start = time.perf_counter()
    with running(context), torch.inference_mode():
        for index, node_id in enumerate(workflow.order, start=1):
            spec = workflow.specs[node_id]
            node_start = time.perf_counter()
            try:
                instance = instances.setdefault(node_id, spec.cls())
                inputs = _gather_inputs(node_id, workflow.prompt[node_id]["inputs"], spec, result, context)
                returned = call_over_lists(getattr(instance, spec.cls.FUNCTION), inputs, spec.input_is_list)
                outputs, ui = _merge_returns(returned, spec)
            except Exception as error:
                result.seconds = time.perf_counter() - start
                if progress:
                    progress(f"[{index}/{len(workflow.order)}] node {node_id} {spec.class_type}: FAILED ({error})")
                raise NodeExecutionError(node_id, spec.class_type, error, partial=result) from error
            seconds = time.perf_counter() - node_start
            result.nodes[node_id] = NodeRecord(node_id, spec.class_type, seconds, len(returned), outputs, ui)
            result.files += [path for path in written_files(ui, context) if path not in result.files]
            if progress:
                progress(f"[{index}/{len(workflow.order)}] node {node_id} {spec.class_type}: {seconds:.2f} s")
    result.seconds = time.perf_counter() - start
    return result


def _gather_inputs(node_id: str, inputs: dict, spec: NodeSpec, result: RunResult, context: RunContext) -> dict:
    """Every input as a list: a link gives the origin's output list, a constant a list of one."""
    gathered = {}
    for name, value in inputs.items():
        if is_link(value):
            gathered[name] = result.nodes[value[0]].outputs[value[1]]
        elif name in spec.inputs:  # undeclared constants are not passed, as in ComfyUI
            gathered[name] = [value]
    hidden_values = {"PROMPT": context.prompt, "EXTRA_PNGINFO": context.extra_pnginfo, "UNIQUE_ID": node_id}
    for name, kind in spec.hidden.items():
        gathered[name] = [hidden_values.get(kind)]
    return gathered


def _merge_returns(returned: list, spec: NodeSpec) -> tuple[list[list], dict]:
    results, uis = [], []
    for value in returned:
        if isinstance(value, dict):
            if "expand" in value:
                raise NodeContractError("the node returned a graph to expand, which only ComfyUI can run")
            if value.get("ui") is not None:
                uis.append(value["ui"])
            if value.get("result") is not None:
                results.append(_check_result(value["result"], spec))
        elif value is not None or spec.return_types:
            results.append(_check_result(value, spec))
    outputs = []
    for slot, is_list in enumerate(spec.output_is_list):
        if is_list:
            merged = []
            for items in results:
                if not isinstance(items[slot], (list, tuple)):
                    raise NodeContractError(f"output {slot} is declared OUTPUT_IS_LIST but the node returned a "
                                            f"{type(items[slot]).__name__}, not a list")
                merged.extend(items[slot])
            outputs.append(merged)
        else:
            outputs.append([items[slot] for items in results])
    ui: dict = {}
    for item in uis:
        for key, values in item.items():
            ui.setdefault(key, []).extend(values if isinstance(values, (list, tuple)) else [values])
    return outputs, ui


def _check_result(value, spec: NodeSpec) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise NodeContractError(f"the node must return a tuple of {len(spec.return_types)} value(s), "
                                f"not a {type(value).__name__}")
    if len(value) != len(spec.return_types):
        raise NodeContractError(f"the node returned {len(value)} value(s) but declares {len(spec.return_types)} "
                                f"output(s) {tuple(spec.return_types)}")
    return tuple(value)


def written_files(ui: dict, context: RunContext) -> list[Path]:
    """Files a node reports in its ui as ComfyUI's save nodes do: {"filename", "subfolder", "type"}."""
    folders = {"output": context.output_dir, "temp": context.preview_dir}
    found = []
    for values in ui.values():
        for item in values:
            if isinstance(item, dict) and isinstance(item.get("filename"), str) and folders.get(item.get("type")):
                path = folders[item["type"]] / (item.get("subfolder") or "") / item["filename"]
                if path.is_file():
                    found.append(path)
    return found
