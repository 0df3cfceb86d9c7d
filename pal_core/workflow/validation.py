"""Checking a workflow before anything runs, with ComfyUI's rules, and collecting every problem.

Rules (ComfyUI's execution.validate_inputs, re-implemented): every class is installed; there is an
output node; for the nodes the outputs need: each required input is present; a link is [node id, slot]
and points to an existing node and output slot of a compatible type; a constant converts to the input's
type (int(), float(), str(), bool() as ComfyUI does) and lies within min/max and among a combo's
choices, unless the node's VALIDATE_INPUTS takes that input and checks it itself; VALIDATE_INPUTS
returns True; the needed nodes have no cycle.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Mapping

from .errors import Issue, WorkflowValidationError
from .lists import call_over_lists
from .specs import InputSpec, NodeSpec, node_spec, types_compatible

_CONVERTERS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
_MAX_CHOICES_SHOWN = 20


@dataclass
class ValidatedWorkflow:
    prompt: dict  # the API prompt, constants converted to their declared types
    specs: dict[str, NodeSpec]  # node id -> its class's declarations, for the nodes that run
    outputs: list[str]  # output node ids
    order: list[str]  # the nodes the outputs need, each after its inputs


def node_sort_key(node_id: str):
    return (0, int(node_id), "") if node_id.lstrip("-").isdigit() else (1, 0, node_id)


def is_link(value) -> bool:
    """[origin node id, output slot]. A list value of another shape is a malformed link when validating,
    and a constant once validated (list-valued widgets arrive wrapped as {"__value__": [...]})."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def validate(prompt: dict, classes: Mapping[str, type],
             hints: Mapping[tuple[str, str], str] | None = None) -> ValidatedWorkflow:
    """Raises WorkflowValidationError listing every problem; returns what the executor needs."""
    prompt = copy.deepcopy(prompt)
    hints = hints or {}
    issues: list[Issue] = []
    specs = _read_specs(prompt, classes, issues)
    outputs = sorted((node_id for node_id, spec in specs.items() if spec.is_output), key=node_sort_key)
    if not outputs:
        issues.append(Issue(None, None, None, "prompt_no_outputs",
                            "the workflow has no output node (such as SaveImage or PreviewImage), so nothing "
                            "would run; add one, or unmute it"))
    needed = needed_nodes(prompt, outputs)
    for node_id in sorted(needed, key=node_sort_key):
        if node_id in specs:
            issues += _check_node(node_id, prompt, specs, hints)
    issues += _find_cycles(prompt, needed)
    if issues:
        raise WorkflowValidationError(issues)
    return ValidatedWorkflow(prompt, {node_id: specs[node_id] for node_id in needed}, outputs,
                             execution_order(prompt, outputs))


def _read_specs(prompt: dict, classes: Mapping[str, type], issues: list[Issue]) -> dict[str, NodeSpec]:
    specs = {}
    for node_id in sorted(prompt, key=node_sort_key):
        class_type = prompt[node_id]["class_type"]
        cls = classes.get(class_type)
        if cls is None:
            issues.append(Issue(node_id, class_type, None, "missing_node_type",
                                f"no node class '{class_type}' is installed (neither a core node of `pal run` "
                                "nor one of an installed node pack)"))
            continue
        try:
            specs[node_id] = node_spec(class_type, cls)
        except Exception as error:  # a broken node class must not hide the other problems
            issues.append(Issue(node_id, class_type, None, "invalid_node_class",
                                f"INPUT_TYPES() failed: {type(error).__name__}: {error}"))
    return specs


def needed_nodes(prompt: dict, outputs: list[str]) -> set[str]:
    """The output nodes and everything they read from: what runs."""
    needed, stack = set(), list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in needed or node_id not in prompt:
            continue
        needed.add(node_id)
        stack += [value[0] for value in prompt[node_id]["inputs"].values() if is_link(value)]
    return needed


def _check_node(node_id: str, prompt: dict, specs: dict[str, NodeSpec], hints) -> list[Issue]:
    spec = specs[node_id]
    inputs = prompt[node_id]["inputs"]
    validate_args, validate_takes_all = spec.validate_function_arguments()
    issues, received_types = [], {}
    issue = lambda name, kind, message: Issue(node_id, spec.class_type, name, kind, message)  # noqa: E731
    for name, input_spec in spec.inputs.items():
        if name not in inputs:
            if input_spec.required:
                why = f" ({hints[(node_id, name)]})" if (node_id, name) in hints else ""
                issues.append(issue(name, "required_input_missing", f"required input is missing{why}"))
            continue
        value = inputs[name]
        if isinstance(value, list):
            problem, received = _check_link(value, input_spec, prompt, specs,
                                            check_type="input_types" not in validate_args)
            if problem is not None:
                issues.append(issue(name, *problem))
            elif received is not None:
                received_types[name] = received
            continue
        if input_spec.link_only:
            issues.append(issue(name, "link_required", f"{input_spec.type_name} comes from another node's output; "
                                                       f"connect one (got the constant {value!r:.60})"))
            continue
        if value is None and input_spec.required:  # null in the file: no value, which would fail only when it runs
            issues.append(issue(name, "required_input_missing", "required input has no value (null); give it a "
                                                                "value or connect a node"))
            continue
        converted = _convert(value, input_spec)
        if isinstance(converted, Issue):
            issues.append(issue(name, converted.kind, converted.message))
            continue
        inputs[name] = converted
        if name not in validate_args and not validate_takes_all:
            problem = _check_value(converted, input_spec)
            if problem is not None:
                issues.append(issue(name, *problem))
    for name, value in inputs.items():  # links to undeclared (dynamic) inputs: their source must exist
        if name not in spec.inputs and isinstance(value, list):
            problem, _ = _check_link(value, None, prompt, specs, check_type=False)
            if problem is not None:
                issues.append(issue(name, *problem))
    if not issues and (validate_args or validate_takes_all):
        issues += _run_validate_inputs(node_id, spec, inputs, validate_args, validate_takes_all, received_types)
    return issues


def _check_link(value: list, input_spec: InputSpec | None, prompt: dict, specs: dict[str, NodeSpec], check_type: bool):
    """((kind, message) or None, the received type or None when it cannot be known)."""
    if not is_link(value):
        return ("bad_linked_input", f"a link must be [node id, output slot], got {value!r}"), None
    origin_id, slot = value
    if origin_id not in prompt:
        return ("missing_linked_node", f"linked to node {origin_id}, which is not in the workflow"), None
    origin = specs.get(origin_id)
    if origin is None:
        return None, None  # its class is missing: already reported on that node
    if not 0 <= slot < len(origin.return_types):
        return ("missing_linked_output", f"linked to output slot {slot} of node {origin_id} ({origin.class_type}), "
                                         f"which has {len(origin.return_types)} output(s)"), None
    received = origin.return_types[slot]
    if check_type and not _link_type_fits(received, input_spec):
        return ("return_type_mismatch", f"expects {input_spec.type_name} but is linked to output {slot} of node "
                                        f"{origin_id} ({origin.class_type}), which gives {received}"), received
    return None, received


def _link_type_fits(received, input_spec: InputSpec) -> bool:
    if input_spec.is_combo:  # a combo accepts any combo-typed output (its value is checked when it runs)
        return isinstance(received, (list, tuple)) or received in ("COMBO", "*") \
            or types_compatible(received, input_spec.type)
    return types_compatible(received, input_spec.type)


def _convert(value, input_spec: InputSpec):
    if isinstance(value, dict) and "__value__" in value:  # the frontend's wrapper for list-valued widgets
        value = value["__value__"]
    converter = _CONVERTERS.get(input_spec.type) if isinstance(input_spec.type, str) else None
    if isinstance(value, str) and "\0" in value:  # a path with one would fail only when the node runs
        return Issue(None, None, None, "invalid_input_type", f"{value[:60]!r} contains a NUL character")
    if converter is None:
        return value
    try:
        converted = converter(value)
    except (TypeError, ValueError, OverflowError) as error:
        return Issue(None, None, None, "invalid_input_type",
                     f"{value!r:.60} cannot be converted to {input_spec.type} ({error})")
    if isinstance(converted, float) and not math.isfinite(converted):
        return Issue(None, None, None, "invalid_input_type", f"{value!r} is not a finite number")
    return converted


def _check_value(value, input_spec: InputSpec):
    options = input_spec.options
    try:
        if "min" in options and value < options["min"]:
            return ("value_smaller_than_min", f"value {value!r} is smaller than the minimum {options['min']!r}")
        if "max" in options and value > options["max"]:
            return ("value_bigger_than_max", f"value {value!r} is bigger than the maximum {options['max']!r}")
    except TypeError:
        return ("invalid_input_type", f"value {value!r} cannot be compared with the input's limits")
    choices = input_spec.choices
    if choices is not None and not options.get("remote_combo"):
        wanted = value if options.get("multiselect") and isinstance(value, list) else [value]
        invalid = [item for item in wanted if item not in choices]
        if invalid:
            shown = (", ".join(repr(c) for c in choices) if len(choices) <= _MAX_CHOICES_SHOWN
                     else f"{len(choices)} choices")
            return ("value_not_in_list", f"{', '.join(repr(v) for v in invalid)} is not one of: {shown or '(none)'}")
    return None


def _run_validate_inputs(node_id, spec: NodeSpec, inputs: dict, arguments: list[str], takes_all: bool,
                         received_types: dict) -> list[Issue]:
    """The node's own VALIDATE_INPUTS, given its constants (linked inputs are unknown yet: None)."""
    values = {}
    for name, value in inputs.items():
        if name in arguments or takes_all:
            if is_link(value):
                values[name] = [None]
            elif name in spec.inputs:
                values[name] = [value]
    if "input_types" in arguments:
        values["input_types"] = [received_types]
    try:
        answers = call_over_lists(spec.cls.VALIDATE_INPUTS, values, spec.input_is_list)
    except Exception as error:
        return [Issue(node_id, spec.class_type, None, "exception_during_validation",
                      f"VALIDATE_INPUTS raised {type(error).__name__}: {error}")]
    checked = [name for name in values if name != "input_types"]
    input_name = checked[0] if len(checked) == 1 else None  # ComfyUI names the inputs it passed
    return [Issue(node_id, spec.class_type, input_name, "custom_validation_failed",
                  answer if isinstance(answer, str) else f"rejected by the node's VALIDATE_INPUTS ({answer!r})")
            for answer in answers if answer is not True]


def _origins(prompt: dict, node_id: str, among) -> list[str]:
    return [value[0] for value in prompt[node_id]["inputs"].values() if is_link(value) and value[0] in among]


def _find_cycles(prompt: dict, needed: set[str]) -> list[Issue]:
    """Depth-first, with an explicit stack (a chain of thousands of nodes must not exhaust Python's)."""
    issues, state, path = [], {}, []  # state: 1 on the current path, 2 done
    for start in sorted(needed, key=node_sort_key):
        if start in state:
            continue
        state[start] = 1
        path.append(start)
        stack = [iter(_origins(prompt, start, needed))]
        while stack:
            origin = next(stack[-1], None)
            if origin is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(origin) == 1:
                cycle = path[path.index(origin):] + [origin]
                route = " -> ".join(f"{n} ({prompt[n]['class_type']})" for n in cycle)
                issues.append(Issue(origin, prompt[origin]["class_type"], None, "dependency_cycle",
                                    f"the workflow loops back on itself: {route}"))
            elif origin not in state:
                state[origin] = 1
                path.append(origin)
                stack.append(iter(_origins(prompt, origin, needed)))
    return issues


def execution_order(prompt: dict, outputs: list[str]) -> list[str]:
    """Each node after the nodes it reads from; outputs taken in id order, depth first (explicit stack)."""
    order, seen = [], set()
    for output in outputs:
        if output in seen:
            continue
        seen.add(output)
        stack = [(output, iter(_origins(prompt, output, prompt)))]
        while stack:
            node_id, pending = stack[-1]
            origin = next((o for o in pending if o not in seen), None)
            if origin is None:
                stack.pop()
                order.append(node_id)
            else:
                seen.add(origin)
                stack.append((origin, iter(_origins(prompt, origin, prompt))))
    return order
