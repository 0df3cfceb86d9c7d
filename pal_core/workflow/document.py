"""What a workflow document may hold, checked before anything reads it: hostile files fail here, whole.

Every value: nested at most MAX_DEPTH deep, numbers finite and within 64 bits, no NUL character in
any text. A UI-format document: every field the conversion reads has the type ComfyUI writes. All
walks use explicit stacks, so no document (however deep, long or wide) can exhaust Python's stack.
Each problem is listed with where it is, as a JSON path (`nodes[3].widgets_values[1]`).
"""

from __future__ import annotations

import math

from .errors import WorkflowFormatError

MAX_DEPTH = 64  # ComfyUI's own documents nest about 6 deep
MAX_INTEGER = 2**64  # seeds go up to 0xFFFFFFFFFFFFFFFF
_SHOWN = 12


def check_document(data) -> None:
    """Raises WorkflowFormatError listing what is wrong with the document (values, then UI fields)."""
    if not isinstance(data, dict):
        raise WorkflowFormatError(f"a workflow is a JSON object, not a {type(data).__name__}")
    problems = value_problems(data)
    if not problems and isinstance(data.get("nodes"), list):
        problems = ui_field_problems(data)
    if problems:
        shown = problems[:_SHOWN] + ([f"... and {len(problems) - _SHOWN} more"] if len(problems) > _SHOWN else [])
        raise WorkflowFormatError("the workflow document is malformed; nothing was run", shown)


def value_problems(data) -> list[str]:
    problems = []
    stack = [(data, "document", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            problems.append(f"{where}: nested more than {MAX_DEPTH} levels deep")
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str) or "\0" in key:
                    problems.append(f"{where}: a key {key!r:.40} that is not text without NUL characters")
                    continue
                stack.append((item, f"{where}.{key}" if where != "document" else key, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack += [(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if abs(value) > MAX_INTEGER:
                problems.append(f"{where}: the integer {str(value)[:20]}... ({len(str(abs(value)))} digits) is "
                                "larger than any input takes (64 bits)")
        elif isinstance(value, float):
            if not math.isfinite(value):
                problems.append(f"{where}: {value} is not a finite number")
        elif isinstance(value, str):
            if "\0" in value:
                problems.append(f"{where}: text with a NUL character ({value[:40]!r})")
        else:
            problems.append(f"{where}: a {type(value).__name__}, which a workflow cannot hold")
    return problems


def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_slot(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# field -> (check, what it should be); absent fields and null are fine unless said otherwise
_NODE_FIELDS = {
    "id": (_is_id, "a number or text"),
    "type": (lambda v: isinstance(v, str) and v != "", "the node's class name (text)"),
    "mode": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a number (0 on, 2 muted, 4 bypassed)"),
    "inputs": (lambda v: isinstance(v, list), "a list of input slots"),
    "outputs": (lambda v: isinstance(v, list), "a list of output slots"),
    "widgets_values": (lambda v: isinstance(v, (list, dict)), "a list (or an object) of widget values"),
    "title": (lambda v: isinstance(v, str), "text"),
    "properties": (lambda v: isinstance(v, dict), "an object"),
}
def _is_type(value) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


_INPUT_FIELDS = {
    "name": (lambda v: isinstance(v, str), "text"),
    "link": (_is_id, "a link id (a number)"),
    "type": (_is_type, "a type name (text)"),
}
_OUTPUT_FIELDS = {
    "links": (lambda v: isinstance(v, list) and all(_is_id(i) for i in v), "a list of link ids"),
    "type": (_is_type, "a type name (text)"),
}


def ui_field_problems(data: dict) -> list[str]:
    problems = []

    def check(record: dict, fields: dict, where: str) -> None:
        for name, (ok, expected) in fields.items():
            if record.get(name) is not None and not ok(record[name]):
                problems.append(f"{where}.{name} is {_describe(record[name])}; expected {expected}")

    for i, node in enumerate(data["nodes"]):
        where = f"nodes[{i}]"
        if not isinstance(node, dict):
            problems.append(f"{where} is {_describe(node)}; expected a node object")
            continue
        if node.get("id") is None:
            problems.append(f"{where} has no id")
        check(node, _NODE_FIELDS, where)
        for kind, fields in (("inputs", _INPUT_FIELDS), ("outputs", _OUTPUT_FIELDS)):
            if isinstance(node.get(kind), list):
                for j, slot in enumerate(node[kind]):
                    if not isinstance(slot, dict):
                        problems.append(f"{where}.{kind}[{j}] is {_describe(slot)}; expected a slot object")
                    else:
                        check(slot, fields, f"{where}.{kind}[{j}]")
    links = data.get("links")
    if links is not None and not isinstance(links, list):
        problems.append(f"links is {_describe(links)}; expected a list")
    for i, link in enumerate(links if isinstance(links, list) else []):
        if link is None:  # a deleted link some editors leave as null: nothing uses it
            continue
        values = ([link.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot")]
                  if isinstance(link, dict) else link[:5] if isinstance(link, list) else None)
        if values is None or len(values) < 5 or not (_is_id(values[0]) and _is_id(values[1]) and _is_slot(values[2])
                                                     and _is_id(values[3]) and _is_slot(values[4])):
            problems.append(f"links[{i}] is {_describe(link)}; expected [id, origin node, origin slot, target node, "
                            "target slot, type]")
    for name, expected in (("extra", dict), ("definitions", dict), ("groups", list)):
        if data.get(name) is not None and not isinstance(data[name], expected):
            problems.append(f"{name} is {_describe(data[name])}; expected {'an object' if expected is dict else 'a list'}")
    return problems


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
