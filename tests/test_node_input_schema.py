"""Every PAL node's inputs and outputs against the record in tests/data/workflows/node_inputs.json.

A saved workflow names node ids, input names, values and output slots; UI-format files keep widget
values by position. So a change breaks saved workflows when a node id goes, an input goes or becomes
required, its type changes, a saved choice or number stops being accepted, a widget is inserted before
older ones, or an output slot moves. Each of these fails here with what to do instead; a change that
breaks nothing (a new node, a new optional input after the old ones, a wider range) fails too, asking
to be recorded, so the record always says what the current release accepts:

    python tests/test_node_input_schema.py --record

Recording a breaking change is a decision to break users' files: docs/compatibility.md says how.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pal_core.workflow.specs import InputSpec, node_spec

RECORD = Path(__file__).resolve().parent / "data" / "workflows" / "node_inputs.json"
# What the nodes of each frozen release accepted, read from that release's code (tools/freeze_workflow_corpus.py).
RELEASE_RECORDS = Path(__file__).resolve().parent / "data" / "workflows" / "corpus" / "node_inputs"
RECORD_COMMAND = "python tests/test_node_input_schema.py --record"
# Combos listing what this installation has (model files, ComfyUI's samplers): only their type is recorded.
INSTALLATION_CHOICES = {("PALLoadDetector", "model"), ("PALLoadDiffusersInpainter", "model"),
                        ("PALComfyInpainter", "sampler_name"), ("PALComfyInpainter", "scheduler")}


def describe_input(class_type: str, spec: InputSpec) -> dict:
    entry = {"type": spec.type_name, "required": spec.required}
    if spec.is_combo and (class_type, spec.name) not in INSTALLATION_CHOICES:
        entry["choices"] = spec.choices
    for bound in ("min", "max"):
        if bound in spec.options:
            entry[bound] = spec.options[bound]
    return entry


def describe_node(class_type: str, cls: type) -> dict:
    spec = node_spec(class_type, cls)
    return {"deprecated": bool(getattr(cls, "DEPRECATED", False)),
            "inputs": {name: describe_input(class_type, item) for name, item in spec.inputs.items()},
            "widgets": spec.widget_slots(),
            "outputs": list(spec.return_types)}


def describe_pack(classes: dict[str, type]) -> dict:
    return {class_type: describe_node(class_type, cls) for class_type, cls in sorted(classes.items())}


def _prefix(old: list, new: list) -> bool:
    return new[:len(old)] == old


def input_breaks(where: str, old: dict, new: dict | None) -> list[str]:
    """How a saved value of this input would stop being accepted."""
    if new is None:
        return [f"{where} is gone: saved workflows that set it are refused; keep it (optional, ignored if "
                "need be) and mark the old way deprecated instead"]
    problems = []
    if new["required"] and not old["required"]:
        problems.append(f"{where} became required: workflows saved without it are refused; keep it optional "
                        "with the old behaviour as its default")
    if new["type"] != old["type"]:
        problems.append(f"{where} changed type from {old['type']} to {new['type']}: saved values and links no "
                        "longer fit")
    lost = [c for c in old.get("choices") or [] if c not in (new.get("choices") or [])]
    if lost and "choices" in new:
        problems.append(f"{where} no longer accepts {lost}: saved workflows holding them are refused; keep "
                        "the choices (map old ones to their new meaning in the node)")
    if "min" in new and new["min"] > old.get("min", new["min"]):
        problems.append(f"{where}'s minimum rose from {old['min']} to {new['min']}: smaller saved values are refused")
    if "max" in new and new["max"] < old.get("max", new["max"]):
        problems.append(f"{where}'s maximum fell from {old['max']} to {new['max']}: larger saved values are refused")
    return problems


def node_breaks(class_type: str, old: dict, new: dict | None) -> list[str]:
    """What in this node's change stops workflows saved against `old` from running."""
    if new is None:
        return [f"node id {class_type} is gone: every saved workflow using it fails; keep the class registered "
                "with DEPRECATED = True (and CATEGORY PAL/deprecated) instead"]
    problems = []
    for name, entry in old["inputs"].items():
        problems += input_breaks(f"{class_type}.{name}", entry, new["inputs"].get(name))
    for name, entry in new["inputs"].items():
        if name not in old["inputs"] and entry["required"]:
            problems.append(f"{class_type}.{name} is a new required input: workflows saved before it are "
                            "refused; make it optional, with the old behaviour as its default")
    if not _prefix(old["widgets"], new["widgets"]):
        problems.append(f"{class_type}'s widgets were {old['widgets']}, now {new['widgets']}: UI-format files "
                        "keep widget values by position, so old files' values would land on other inputs; add "
                        "new widgets after the old ones (at the end of 'optional')")
    if not _prefix(old["outputs"], new["outputs"]):
        problems.append(f"{class_type}'s outputs were {old['outputs']}, now {new['outputs']}: saved links name "
                        "output slots by number; add new outputs after the old ones")
    return problems


def pack_breaks(recorded: dict, current: dict) -> list[str]:
    return [problem for class_type, old in recorded.items()
            for problem in node_breaks(class_type, old, current.get(class_type))]


@pytest.fixture(scope="module")
def current() -> dict:
    from pal_nodes import NODE_CLASS_MAPPINGS
    return describe_pack(NODE_CLASS_MAPPINGS)


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORD.read_text(encoding="utf-8"))


def test_no_change_to_the_nodes_breaks_a_saved_workflow(recorded, current):
    problems = pack_breaks(recorded, current)
    assert not problems, ("\n".join(problems) + "\n(if breaking saved workflows is really intended: "
                                                "docs/compatibility.md, then " + RECORD_COMMAND + ")")


@pytest.mark.parametrize("release", sorted(p.stem for p in RELEASE_RECORDS.glob("*.json")))
def test_every_earlier_release_s_inputs_are_still_accepted(release, current):
    """Not only the last record: what any release's nodes took, today's take (the corpus shows it running)."""
    problems = pack_breaks(json.loads((RELEASE_RECORDS / f"{release}.json").read_text(encoding="utf-8")), current)
    assert not problems, "\n".join(problems)


def test_the_record_says_what_the_nodes_accept_now(recorded, current):
    if pack_breaks(recorded, current):
        pytest.skip("the nodes changed in a way that breaks saved workflows: the test above says how")
    assert current == recorded, f"the nodes changed without breaking saved workflows: record them ({RECORD_COMMAND})"


def test_deprecated_nodes_stay_registered_and_marked(current):
    for old_id, successor in {"PALAutoFix": "PALAutoFixV2", "PALZoomInpaint": "PALZoomInpaintV2",
                              "PALLoadInpainter": "PALLoadOpenCVInpainter"}.items():
        assert current[old_id]["deprecated"] and not current[successor]["deprecated"]


# The checks themselves, on a node changed the ways that break saved files: each must be caught.

class _Loader:
    RETURN_TYPES = ("DETECTOR", "STRING")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": (["a", "b"], {"default": "a"}), "size": ("INT", {"default": 512, "min": 64})},
                "optional": {"fast": ("BOOLEAN", {"default": False})}}


def _changed(**changes) -> dict:
    node = describe_node("Loader", _Loader)
    node = json.loads(json.dumps(node))
    for key, value in changes.items():
        node[key] = value(node[key])
    return node


BREAKING = {
    "a new required input": dict(inputs=lambda i: {**i, "download": {"type": "BOOLEAN", "required": True}}),
    "an optional input made required": dict(inputs=lambda i: {**i, "fast": {**i["fast"], "required": True}}),
    "an input removed": dict(inputs=lambda i: {k: v for k, v in i.items() if k != "size"}),
    "a choice removed": dict(inputs=lambda i: {**i, "model": {**i["model"], "choices": ["a"]}}),
    "a minimum raised": dict(inputs=lambda i: {**i, "size": {**i["size"], "min": 128}}),
    "a type changed": dict(inputs=lambda i: {**i, "size": {**i["size"], "type": "FLOAT"}}),
    "a widget inserted before older ones": dict(widgets=lambda w: ["new", *w]),
    "an output slot moved": dict(outputs=lambda o: list(reversed(o))),
}


@pytest.mark.parametrize("change", BREAKING)
def test_each_kind_of_break_is_caught(change):
    old = describe_node("Loader", _Loader)
    assert node_breaks("Loader", old, old) == []
    (problem,) = node_breaks("Loader", old, _changed(**BREAKING[change]))
    assert problem.startswith("Loader")
    assert pack_breaks({"Loader": old}, {}) and "DEPRECATED" in pack_breaks({"Loader": old}, {})[0]


def test_changes_that_keep_saved_files_running_pass():
    old = describe_node("Loader", _Loader)
    grown = _changed(inputs=lambda i: {**i, "extra": {"type": "BOOLEAN", "required": False},
                                       "size": {**i["size"], "min": 0}},
                     widgets=lambda w: [*w, "extra"], outputs=lambda o: [*o, "MASK"])
    assert node_breaks("Loader", old, grown) == []


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(__doc__)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pal_nodes import NODE_CLASS_MAPPINGS
    RECORD.write_text(json.dumps(describe_pack(NODE_CLASS_MAPPINGS), indent=1) + "\n", encoding="utf-8")
    print(f"recorded {len(NODE_CLASS_MAPPINGS)} nodes in {RECORD}")
