"""Reading workflow files: ComfyUI's API format as is, and its UI format converted to the API format.

The conversion follows what ComfyUI's frontend does when it queues a graph:
- widget values are matched to the node's INPUT_TYPES order (required, then optional), skipping the
  frontend-only widgets that are stored in widgets_values but never sent (a seed's
  control_after_generate, an image upload button);
- Reroute, PrimitiveNode, Note and MarkdownNote are frontend-only: links through a Reroute are followed
  to the real source, a PrimitiveNode's value is written into the widget it feeds;
- muted nodes (mode 2) are dropped, and inputs linked to them removed;
- bypassed nodes (mode 4) are dropped and each link from one of their outputs goes to the bypassed
  node's input of the matching type instead (same slot first, then the first exact type match, then
  the first compatible one), as the frontend does.
Subgraphs and group nodes are refused by name, with the nodes that use them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from PIL import Image

from .errors import WorkflowFormatError
from .specs import NodeSpec, node_spec

FRONTEND_ONLY_TYPES = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}
MODE_MUTED = 2
MODE_BYPASSED = 4
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


@dataclass
class LoadedWorkflow:
    """A workflow in the API format, and what the conversion noticed on the way."""

    prompt: dict  # {node_id: {"class_type": ..., "inputs": {...}}}
    source_format: str  # "api" or "ui"
    ui_workflow: dict | None = None  # the UI document, embedded in saved PNGs as ComfyUI does
    # (node_id, input_name) -> why a linked input was dropped; validation appends it to its error.
    hints: dict[tuple[str, str], str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def read_workflow_file(path: str | Path) -> dict:
    """A workflow .json, or the workflow a ComfyUI (or `pal run`) PNG carries in its text chunks."""
    path = Path(path)
    if path.suffix.lower() == ".png" and path.is_file():
        return read_png_workflow(path)
    return read_json(path)


def read_png_workflow(path: Path) -> dict:
    try:
        with Image.open(path) as image:
            chunks = dict(getattr(image, "text", {}) or {})
    except ValueError as error:  # Pillow refuses text chunks past its memory limits
        if "text" in str(error).lower() or "decompressed" in str(error).lower():
            raise WorkflowFormatError(f"{path}: its text chunks are too large to read ({error}); a ComfyUI workflow "
                                      "is far smaller: save the workflow again from ComfyUI") from None
        raise WorkflowFormatError(f"{path}: cannot be read as a PNG ({error})") from None
    except (OSError, Image.DecompressionBombError) as error:
        raise WorkflowFormatError(f"{path}: cannot be read as a PNG ({error})") from None
    unreadable = []
    for key in ("workflow", "prompt"):  # the UI document keeps bypass/mute; the prompt is what last ran
        if key in chunks:
            try:
                data = json.loads(chunks[key])
            except RecursionError:
                unreadable.append(f"'{key}' is nested too deeply")
                continue
            except ValueError:  # not JSON, or a huge number
                unreadable.append(f"'{key}' is not valid JSON")
                continue
            if isinstance(data, dict):
                return data
            unreadable.append(f"'{key}' holds a JSON {type(data).__name__}, not a workflow object")
    if unreadable:
        raise WorkflowFormatError(f"{path}: this PNG's workflow text chunks cannot be read ({'; '.join(unreadable)}); "
                                  "save the workflow again from ComfyUI, or run its .json file")
    raise WorkflowFormatError(f"{path}: this PNG carries no ComfyUI workflow (no 'workflow' or 'prompt' text chunk)")


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowFormatError(f"{path}: no such workflow file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise WorkflowFormatError(f"{path}: cannot be read ({error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise WorkflowFormatError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: "
                                  f"{error.msg})") from None
    except ValueError as error:  # an integer literal of thousands of digits
        raise WorkflowFormatError(f"{path}: holds a number too large to read ({error})") from None
    except RecursionError:
        raise WorkflowFormatError(f"{path}: nested too deeply to be a workflow") from None
    if not isinstance(data, dict):
        raise WorkflowFormatError(f"{path}: a workflow is a JSON object, not a {type(data).__name__}")
    return data


def is_ui_format(data: dict) -> bool:
    return isinstance(data.get("nodes"), list)


def load(data: dict, classes: Mapping[str, type]) -> LoadedWorkflow:
    """Any supported layout -> API format. `classes` gives INPUT_TYPES for the UI conversion."""
    if is_ui_format(data):
        return ui_to_api(data, classes)
    if isinstance(data.get("prompt"), dict) and "class_type" not in data["prompt"]:
        data = data["prompt"]  # the body of a POST /prompt request
    return LoadedWorkflow(normalise_api(data), "api")


# ---------------------------------------------------------------------------------------------- API

def normalise_api(data: dict) -> dict:
    """Checks the API layout and returns a copy with string node ids and [str id, int slot] links."""
    problems, prompt = [], {}
    if not data:
        raise WorkflowFormatError("the workflow is empty (no nodes)")
    for raw_id, node in data.items():
        node_id = str(raw_id)
        if not isinstance(node, dict):
            problems.append(f"node {node_id}: expected an object with class_type and inputs, got "
                            f"{type(node).__name__} (is this an API-format workflow?)")
            continue
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            problems.append(f"node {node_id}: has no class_type (the workflow may be corrupted)")
            continue
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            problems.append(f"node {node_id} ({node['class_type']}): inputs must be an object, "
                            f"not {type(inputs).__name__}")
            continue
        prompt[node_id] = {"class_type": node["class_type"],
                           "inputs": {name: _normalise_link(value) for name, value in inputs.items()}}
        if isinstance(node.get("_meta"), dict):
            prompt[node_id]["_meta"] = dict(node["_meta"])
    if problems:
        raise WorkflowFormatError("the workflow is not in ComfyUI's API format", problems)
    return prompt


def _normalise_link(value):
    # Some tools write node ids as numbers; ComfyUI's own files use strings.
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], (int, str)) \
            and isinstance(value[1], int) and not isinstance(value[1], bool):
        return [str(value[0]), value[1]]
    return value


# ----------------------------------------------------------------------------------------------- UI

@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int


class _UIGraph:
    """The UI document's nodes and links, indexed."""

    def __init__(self, data: dict):
        self.nodes: dict[str, dict] = {}
        for node in data["nodes"]:
            if isinstance(node, dict) and "id" in node:
                self.nodes[str(node["id"])] = node
        self.links: dict[str, _Link] = {}
        for link in data.get("links") or []:
            parsed = _parse_link(link)
            if parsed is not None:
                self.links[parsed[0]] = parsed[1]

    def inputs(self, node: dict) -> list[dict]:
        return [slot for slot in node.get("inputs") or [] if isinstance(slot, dict)]

    def output_type(self, node: dict, slot: int):
        outputs = node.get("outputs") or []
        return outputs[slot].get("type") if slot < len(outputs) and isinstance(outputs[slot], dict) else None


def _parse_link(link) -> tuple[str, _Link] | None:
    if isinstance(link, dict):
        values = [link.get(key) for key in ("id", "origin_id", "origin_slot", "target_id", "target_slot")]
    elif isinstance(link, list) and len(link) >= 5:
        values = link[:5]
    else:
        return None
    if any(v is None for v in values):
        return None
    link_id, origin_id, origin_slot, target_id, target_slot = values
    try:
        return str(link_id), _Link(str(origin_id), int(origin_slot), str(target_id), int(target_slot))
    except (TypeError, ValueError):  # a damaged entry: inputs using it are reported as unconnected
        return None


def _refuse_unsupported(data: dict, graph: _UIGraph) -> None:
    subgraph_ids = {str(sub.get("id")) for sub in (data.get("definitions") or {}).get("subgraphs") or []
                    if isinstance(sub, dict)}
    group_nodes = set(((data.get("extra") or {}).get("groupNodes") or {}).keys())
    problems = []
    for node_id, node in graph.nodes.items():
        kind = str(node.get("type", ""))
        if kind in subgraph_ids or _UUID.match(kind):
            problems.append(f"node {node_id} ({node.get('title') or kind}) is a subgraph; convert it back to "
                            "plain nodes in ComfyUI (right-click > Unpack Subgraph) and save again")
        elif kind.startswith(("workflow>", "workflow/")) or kind in group_nodes:
            problems.append(f"node {node_id} ({kind}) is a group node; convert it to nodes in ComfyUI "
                            "(right-click > Convert to nodes) and save again")
    if problems:
        raise WorkflowFormatError("this workflow uses constructs `pal run` does not run", problems)


def _compatible(a, b) -> bool:
    """The frontend's connection rule: empty or "*" matches anything, else the unions must overlap."""
    if not a or not b or a == "*" or b == "*":
        return True
    split = lambda t: {part.strip().lower() for part in str(t).split(",")}  # noqa: E731
    return bool(split(a) & split(b))


class _Resolver:
    """Follows a link back through Reroutes and bypassed nodes to the node that really produces it.

    Step by step in a loop, not by recursion: a chain of thousands of Reroutes is a valid graph.
    """

    def __init__(self, graph: _UIGraph):
        self.graph = graph

    def resolve_input(self, node: dict, slot: int, target_type, seen: set) -> tuple:
        """("link", origin_id, origin_slot) | ("primitive", node) | ("none", reason)."""
        return self._walk(("in", node, slot), target_type, seen)

    def _walk(self, step: tuple, target_type, seen: set) -> tuple:
        while step[0] in ("in", "out"):
            direction, node, slot = step
            step = (self._input_step if direction == "in" else self._output_step)(node, slot, target_type, seen)
        return step

    def _input_step(self, node: dict, slot: int, target_type, seen: set) -> tuple:
        key = (str(node["id"]), "in", slot)
        if key in seen:
            return ("none", f"links through node {node['id']} loop back on themselves")
        seen.add(key)
        inputs = self.graph.inputs(node)
        if slot >= len(inputs) or inputs[slot].get("link") is None:
            return ("none", f"node {node['id']} ({node.get('type')}) has nothing connected to its input {slot}")
        link = self.graph.links.get(str(inputs[slot]["link"]))
        if link is None:
            return ("none", f"link {inputs[slot]['link']} of node {node['id']} is not in the workflow's link list")
        origin = self.graph.nodes.get(link.origin_id)
        if origin is None:
            return ("none", f"link {inputs[slot]['link']} comes from node {link.origin_id}, "
                            "which is not in the workflow")
        return ("out", origin, link.origin_slot)

    def _output_step(self, node: dict, slot: int, target_type, seen: set) -> tuple:
        key = (str(node["id"]), "out", slot)
        if key in seen:
            return ("none", f"links through node {node['id']} loop back on themselves")
        seen.add(key)
        kind = node.get("type")
        if node.get("mode") == MODE_BYPASSED:
            index = self._bypass_input(node, slot, target_type)
            if index < 0:
                return ("none", f"it comes from bypassed node {node['id']} ({kind}), which has no {target_type} "
                                "input to pass through")
            return ("in", node, index)
        if kind == "PrimitiveNode":
            return ("primitive", node)
        if kind in FRONTEND_ONLY_TYPES:  # Reroute: its output n is its input n
            if slot < len(self.graph.inputs(node)):
                return ("in", node, slot)
            return ("none", f"it comes from {kind} node {node['id']}, which passes nothing on")
        return ("link", str(node["id"]), slot)

    def _bypass_input(self, node: dict, slot: int, target_type) -> int:
        inputs = self.graph.inputs(node)
        if target_type in ("*", "", None):
            return slot if slot < len(inputs) else (0 if inputs else -1)
        output_type = self.graph.output_type(node, slot)

        def fits(index: int) -> bool:
            kind = inputs[index].get("type")
            return _compatible(kind, output_type) and _compatible(kind, target_type)

        if slot < len(inputs) and fits(slot):
            return slot
        for index, item in enumerate(inputs):
            if item.get("type") == target_type:
                return index
        return next((index for index in range(len(inputs)) if fits(index)), -1)


def ui_to_api(data: dict, classes: Mapping[str, type]) -> LoadedWorkflow:
    graph = _UIGraph(data)
    _refuse_unsupported(data, graph)
    resolver = _Resolver(graph)
    result = LoadedWorkflow({}, "ui", ui_workflow=data)
    for node_id, node in graph.nodes.items():
        kind = node.get("type")
        if kind in FRONTEND_ONLY_TYPES or node.get("mode") in (MODE_MUTED, MODE_BYPASSED):
            continue
        if not isinstance(kind, str) or not kind:
            raise WorkflowFormatError(f"node {node_id} has no type (the workflow may be corrupted)")
        spec = _spec_or_none(kind, classes.get(kind))  # None: validation reports the class
        inputs = _widget_inputs(node_id, node, spec, result.warnings) if spec is not None else {}
        _link_inputs(node_id, node, graph, resolver, inputs, result.hints)
        entry = {"class_type": kind, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        result.prompt[node_id] = entry
    _drop_links_to_removed_nodes(result, graph)
    if not result.prompt:
        raise WorkflowFormatError("the workflow has no nodes to run (all are notes, reroutes, muted or bypassed)")
    return result


def _spec_or_none(kind: str, cls: type | None) -> NodeSpec | None:
    if cls is None:
        return None
    try:
        return node_spec(kind, cls)
    except Exception:  # a broken INPUT_TYPES is reported, with its error, by validation
        return None


def _widget_inputs(node_id: str, node: dict, spec: NodeSpec, warnings: list[str]) -> dict:
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some nodes save their widgets by name
        return {name: {"__value__": values[name]} if isinstance(values[name], list) else values[name]
                for name in spec.inputs if name in values and spec.inputs[name].is_widget}
    values = list(values or [])
    slots = spec.widget_slots()
    inputs = {}
    for name, value in zip(slots, values):
        if name is not None:  # a list value is wrapped, as the frontend does, so it is not read as a link
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
    where = f"node {node_id} ({spec.class_type})"
    if len(values) > len(slots):
        warnings.append(f"{where}: widgets_values has {len(values)} values but the node has {len(slots)} "
                        "widgets; the extra values were ignored (the node may be newer or older than the file)")
    elif len(values) < len(slots):
        for name in slots[len(values):]:
            if name is not None and "default" in spec.inputs[name].options:
                inputs[name] = spec.inputs[name].options["default"]
                warnings.append(f"{where}: no saved value for '{name}'; using its default "
                                f"{spec.inputs[name].options['default']!r}")
    return inputs


def _link_inputs(node_id: str, node: dict, graph: _UIGraph, resolver: _Resolver, inputs: dict,
                 hints: dict) -> None:
    for slot, item in enumerate(graph.inputs(node)):
        name = item.get("name")
        if item.get("link") is None or not name:
            continue
        resolved = resolver.resolve_input(node, slot, item.get("type"), set())
        if resolved[0] == "link":
            inputs[name] = [resolved[1], resolved[2]]
        elif resolved[0] == "primitive":
            primitive_values = resolved[1].get("widgets_values") or []
            if primitive_values:
                inputs[name] = primitive_values[0]
            else:
                hints[(node_id, name)] = f"its PrimitiveNode {resolved[1]['id']} has no value saved"
        else:  # as the frontend: nothing is sent for this input (a widget keeps its own value)
            hints[(node_id, name)] = resolved[1]


def _drop_links_to_removed_nodes(result: LoadedWorkflow, graph: _UIGraph) -> None:
    """As the frontend does: an input linked to a node that is not sent (muted) is removed."""
    for node_id, entry in result.prompt.items():
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and value[0] not in result.prompt:
                del entry["inputs"][name]
                origin = graph.nodes.get(value[0], {})
                state = "muted" if origin.get("mode") == MODE_MUTED else "not sent to the server"
                result.hints[(node_id, name)] = (f"it comes from node {value[0]} ({origin.get('type')}), "
                                                 f"which is {state}")
