"""`--set NODE_ID.INPUT=VALUE`: changing a workflow's constants for one run.

A value is read as JSON when it is a number or a boolean (or a quoted string), else taken as the text
given. The new value then goes through validation like any other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from .errors import WorkflowError
from .specs import node_spec


class OverrideError(WorkflowError):
    """A --set that names no node or no input of it."""


def parse_value(text: str):
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text
    return value if isinstance(value, (int, float, bool, str)) else text


def parse_assignment(text: str) -> tuple[str, str, object]:
    """'5.seed=42' -> ('5', 'seed', 42)."""
    target, equals, value = text.partition("=")
    node_id, dot, name = target.strip().partition(".")
    if not equals or not dot or not node_id or not name:
        raise OverrideError(f"--set {text!r}: expected NODE_ID.INPUT=VALUE, e.g. 9.filename_prefix=fixed")
    return node_id, name.strip(), parse_value(value)


def normalise(overrides) -> list[tuple[str, str, object]]:
    """Accepts {"5.seed": 42}, {("5", "seed"): 42} or ["5.seed=42", ...]."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        result = []
        for key, value in overrides.items():
            if isinstance(key, tuple):
                result.append((str(key[0]), str(key[1]), value))
            else:
                node_id, dot, name = str(key).partition(".")
                if not dot or not node_id or not name:
                    raise OverrideError(f"override {key!r}: expected 'NODE_ID.INPUT'")
                result.append((node_id, name, value))
        return result
    if isinstance(overrides, Iterable) and not isinstance(overrides, str):
        return [parse_assignment(item) for item in overrides]
    raise OverrideError(f"overrides must be a mapping or a list of 'NODE_ID.INPUT=VALUE', not {overrides!r}")


def apply(prompt: dict, overrides, classes: Mapping[str, type]) -> None:
    """Sets each value in `prompt` (in place); raises OverrideError naming every bad target at once."""
    problems = []
    for node_id, name, value in normalise(overrides):
        node = prompt.get(node_id)
        if node is None:
            problems.append(f"--set {node_id}.{name}: the workflow has no node {node_id} "
                            f"(its nodes: {', '.join(sorted(prompt, key=_key))})")
            continue
        cls = classes.get(node["class_type"])
        if cls is not None:
            declared = node_spec(node["class_type"], cls).inputs
            if name not in declared:
                problems.append(f"--set {node_id}.{name}: node {node_id} ({node['class_type']}) has no input "
                                f"'{name}' (its inputs: {', '.join(declared) or 'none'})")
                continue
        node["inputs"][name] = value
    if problems:
        raise OverrideError("cannot apply the --set values; nothing was run", problems)


def _key(node_id: str):
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)
