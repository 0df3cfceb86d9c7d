"""Reading a V1 node class's declarations (INPUT_TYPES, RETURN_TYPES, ...) the way ComfyUI reads them."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

# Types the frontend draws as a widget (a value typed on the node) rather than a socket.
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: object  # a type name, or a list of choices (a combo)
    options: dict
    required: bool

    @property
    def is_combo(self) -> bool:
        return isinstance(self.type, (list, tuple)) or self.type == "COMBO"

    @property
    def choices(self) -> list | None:
        if isinstance(self.type, (list, tuple)):
            return list(self.type)
        if self.type == "COMBO":
            return list(self.options.get("options", []))
        return None

    @property
    def type_name(self) -> str:
        return "COMBO" if self.is_combo else str(self.type)

    @property
    def link_only(self) -> bool:
        """An input only a link can feed (IMAGE, MODEL, ...): no widget type, not "*" (which takes anything)."""
        return isinstance(self.type, str) and not self.is_combo and self.type not in WIDGET_TYPES and self.type != "*"

    @property
    def is_widget(self) -> bool:
        """True when the frontend shows this input as a widget (and stores it in widgets_values)."""
        return (self.is_combo or self.type in WIDGET_TYPES) and not self.options.get("forceInput", False)

    def frontend_only_followers(self) -> int:
        """How many frontend-only widgets the frontend adds right after this one (never sent to the server).

        A seed-like INT gets a control_after_generate combo ("fixed", "randomize", ...); an image upload
        combo gets an upload button. Both take a slot in widgets_values.
        """
        count = 0
        control = self.options.get("control_after_generate")
        if control or (control is None and self.type == "INT" and self.name in ("seed", "noise_seed")):
            count += 1
        if any(key.endswith("_upload") and value for key, value in self.options.items()):
            count += 1
        return count


@dataclass
class NodeSpec:
    """Everything the runner needs to know about one node class."""

    class_type: str
    cls: type
    inputs: dict[str, InputSpec] = field(default_factory=dict)  # required then optional, in declared order
    hidden: dict[str, str] = field(default_factory=dict)
    return_types: tuple = ()

    @property
    def is_output(self) -> bool:
        return getattr(self.cls, "OUTPUT_NODE", False) is True

    @property
    def input_is_list(self) -> bool:
        return bool(getattr(self.cls, "INPUT_IS_LIST", False))

    @property
    def output_is_list(self) -> tuple:
        flags = tuple(getattr(self.cls, "OUTPUT_IS_LIST", None) or ())
        return (flags + (False,) * len(self.return_types))[:len(self.return_types)]

    def widget_slots(self) -> list[str | None]:
        """Names in widgets_values order; None marks a frontend-only widget whose value is not sent."""
        slots: list[str | None] = []
        for spec in self.inputs.values():
            if spec.is_widget:
                slots.append(spec.name)
                slots.extend([None] * spec.frontend_only_followers())
        return slots

    def validate_function_arguments(self) -> tuple[list[str], bool]:
        """(argument names, takes **kwargs) of VALIDATE_INPUTS; ([], False) when the class has none."""
        function = getattr(self.cls, "VALIDATE_INPUTS", None)
        if function is None:
            return [], False
        argspec = inspect.getfullargspec(function)
        return list(argspec.args), argspec.varkw is not None


def _parse_entry(name: str, entry, required: bool) -> InputSpec:
    if isinstance(entry, (list, tuple)) and entry:
        kind = entry[0]
        options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    else:  # a bare type name: tolerated by ComfyUI, so by us
        kind, options = entry, {}
    return InputSpec(name, kind, dict(options), required)


def node_spec(class_type: str, cls: type) -> NodeSpec:
    """Reads a class's declarations. INPUT_TYPES is called each time: some nodes list files in it."""
    declared = cls.INPUT_TYPES()
    spec = NodeSpec(class_type, cls, return_types=tuple(getattr(cls, "RETURN_TYPES", ())))
    for category, required in (("required", True), ("optional", False)):
        for name, entry in (declared.get(category) or {}).items():
            spec.inputs[name] = _parse_entry(name, entry, required)
    hidden = declared.get("hidden") or {}
    spec.hidden = {name: (entry[0] if isinstance(entry, (list, tuple)) else entry) for name, entry in hidden.items()}
    return spec


def types_compatible(received, expected) -> bool:
    """ComfyUI's link check: equal (through `!=`, so custom "any" types work), "*", or overlapping
    comma-separated unions like "IMAGE,MASK"."""
    if not received != expected:
        return True
    if received == "*" or expected == "*":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    return bool({t.strip() for t in received.split(",")} & {t.strip() for t in expected.split(",")})
