"""The pack on ComfyUI's V3 node schema (`comfy_api.latest`: `io.ComfyNode`, `io.Schema`, `comfy_entrypoint`),
built from the V1 node classes, so each node is defined once (INPUT_TYPES, RETURN_TYPES, tooltips, ...).

ComfyUI 0.3.64 loads a pack's `NODE_CLASS_MAPPINGS` when it has one and looks for `comfy_entrypoint`
only when it has none; the pack's __init__.py offers one or the other (`host_loads_v3`). Hosts without
`comfy_api` (and the built-in runner, which reads the V1 classes) keep V1; PAL_NODE_SCHEMA=v1 in
ComfyUI's environment forces V1 where V3 would be used.

What the schema keeps as V1 had it, and why (docs/comfyui.md, "V1 or V3"):
- a dropdown stays a V1 list-typed input. `io.Combo.Input` makes its type the string "COMBO", and
  0.3.64's /prompt validation checks a value against the options only when the type is a list: with
  COMBO a saved API prompt holding a value that is no longer offered is no longer refused up front.
- a V1 node returns {"ui": ..., "result": ...}; 0.3.64's `NodeOutput.from_dict` cannot take it (it passes
  `args=` to a constructor that has only *args), so the adapter builds the NodeOutput itself.
- VALIDATE_INPUTS keeps its parameter names: ComfyUI skips its own checks of exactly the inputs that
  validation function names, so a `**kwargs` wrapper would turn off every min/max/options check.
- V3 nodes are stateless classes: each run gets a fresh V1 instance (the PAL nodes keep no state on
  `self`; cached models live in pal_core).
- a node taking the hidden UNIQUE_ID is marked not idempotent: 0.3.64 keys a V1 node's cache by node id
  when its hidden inputs hold "UNIQUE_ID", and never finds it in V3's ("UNIQUE_ID",).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import sys

SCHEMA_ENV = "PAL_NODE_SCHEMA"  # "v1": never offer V3
V1_OUTPUT_KEYS = {"ui", "result"}


def host_loads_v3() -> bool:
    """Whether the ComfyUI importing this pack would load it through `comfy_entrypoint`: it has
    `comfy_api.latest` with ComfyExtension, and its custom-node loader (nodes.load_custom_node, in the
    `nodes` module that is importing us) asks for `comfy_entrypoint`. Nothing is imported to find out."""
    if os.environ.get(SCHEMA_ENV, "").strip().lower() == "v1":
        return False
    host_nodes = sys.modules.get("nodes")
    loader = getattr(host_nodes, "load_custom_node", None)
    code = getattr(loader, "__code__", None)
    if code is None or "comfy_entrypoint" not in code.co_consts:
        return False
    try:
        if importlib.util.find_spec("comfy_api.latest") is None:
            return False
    except (ImportError, ValueError):
        return False
    import comfy_api.latest as latest
    return hasattr(latest, "ComfyExtension") and all(
        hasattr(latest.io, name) for name in ("ComfyNode", "Schema", "NodeOutput", "Custom", "Hidden"))


# ----------------------------------------------------------------------------------------- inputs

@functools.cache
def _io():
    from comfy_api.latest import io
    return io


@functools.cache
def _known_types() -> dict[str, type]:
    """comfy_api's own types by their io_type ("INT", "IMAGE", "MASK", ...); others become io.Custom."""
    io = _io()
    found = {}
    for value in vars(io).values():
        if (isinstance(value, type) and issubclass(value, io.ComfyTypeIO) and isinstance(value.io_type, str)
                and value.io_type not in ("COMBO", "*")):
            found.setdefault(str(value.io_type), value)
    return found


def comfy_type(io_type: str) -> type:
    return _known_types().get(io_type) or _io().Custom(io_type)


@functools.cache
def _list_combo():
    io = _io()

    class ListCombo(io.Combo.Input):
        """A dropdown whose type is its list of options, as V1 declares it (see the module docstring)."""

        def get_io_type(self):
            return list(self.options)

        def as_dict(self):
            described = super().as_dict()
            described.pop("options", None)
            described.pop("multiselect", None)
            return described

    return ListCombo


# V1 option -> argument of the V3 widget input's constructor (what its as_dict writes back under that key)
WIDGET_ARGUMENTS = {
    "INT": {"min": "min", "max": "max", "step": "step", "control_after_generate": "control_after_generate"},
    "FLOAT": {"min": "min", "max": "max", "step": "step", "round": "round"},
    "STRING": {"multiline": "multiline", "placeholder": "placeholder", "dynamicPrompts": "dynamic_prompts"},
    "BOOLEAN": {"label_on": "label_on", "label_off": "label_off"},
}
WIDGET_COMMON = {"default": "default", "forceInput": "force_input", "socketless": "socketless"}


def schema_input(name: str, spec: tuple, optional: bool):
    """One V1 input spec, (type or options, {options}), as a V3 Input that describes itself the same way:
    the options V3 knows as constructor arguments, the rest (e.g. "display") passed on as they are."""
    kind, options = spec[0], dict(spec[1]) if len(spec) > 1 and spec[1] else {}
    arguments = {"optional": optional, "tooltip": options.pop("tooltip", None), "lazy": options.pop("lazy", None)}
    if isinstance(kind, (list, tuple)):
        made_type, arguments["options"] = _list_combo(), list(kind)
        arguments["default"] = options.pop("default", None)
    else:
        made_type = comfy_type(kind).Input
        for option, argument in {**WIDGET_COMMON, **WIDGET_ARGUMENTS[kind]}.items() if kind in WIDGET_ARGUMENTS else ():
            if option in options:
                arguments[argument] = options.pop(option)
    made = made_type(name, **arguments)
    made.extra_dict = options
    return made


def schema_hidden(v1_hidden: dict) -> dict[str, object]:
    """V1 hidden inputs {name: "UNIQUE_ID"} as {name: io.Hidden member}; V3 hands them over as cls.hidden."""
    io = _io()
    hidden = {}
    for name, spec in v1_hidden.items():
        value = spec[0] if isinstance(spec, (list, tuple)) else spec
        try:
            hidden[name] = io.Hidden(value)
        except ValueError:
            raise TypeError(f"hidden input {name!r}: {value!r} is no hidden value ComfyUI's V3 schema knows "
                            f"({', '.join(h.value for h in io.Hidden)})") from None
    return hidden


# ----------------------------------------------------------------------------------------- schema

def define_schema(v1: type, node_id: str, display_name: str | None):
    """The V3 Schema of a V1 node class, read from it now (its dropdowns list the files there are now)."""
    io = _io()
    declared = v1.INPUT_TYPES()
    hidden = list(schema_hidden(declared.get("hidden", {})).values())
    inputs = [schema_input(name, spec, optional=(group == "optional"))
              for group in ("required", "optional") for name, spec in declared.get(group, {}).items()]
    types = tuple(v1.RETURN_TYPES)
    names = tuple(getattr(v1, "RETURN_NAMES", None) or types)
    is_list = tuple(getattr(v1, "OUTPUT_IS_LIST", None) or (False,) * len(types))
    tooltips = tuple(getattr(v1, "OUTPUT_TOOLTIPS", None) or (None,) * len(types))
    outputs = [comfy_type(kind).Output(f"out{i}_{name}", display_name=name, tooltip=tooltip, is_output_list=listed)
               for i, (kind, name, listed, tooltip) in enumerate(zip(types, names, is_list, tooltips))]
    return io.Schema(
        node_id=node_id, display_name=display_name, category=getattr(v1, "CATEGORY", "sd"),
        description=getattr(v1, "DESCRIPTION", ""), inputs=inputs, outputs=outputs,
        hidden=hidden or None,
        is_input_list=bool(getattr(v1, "INPUT_IS_LIST", False)), is_output_node=bool(getattr(v1, "OUTPUT_NODE", False)),
        is_deprecated=bool(getattr(v1, "DEPRECATED", False)), is_experimental=bool(getattr(v1, "EXPERIMENTAL", False)),
        # 0.3.64 caches a V1 node taking UNIQUE_ID per node id, a V3 one only when it is not idempotent
        not_idempotent=bool(getattr(v1, "NOT_IDEMPOTENT", False)) or io.Hidden.unique_id in hidden)


def node_output(returned):
    """What a V1 node function returned, as the NodeOutput a V3 node returns."""
    io = _io()
    if isinstance(returned, dict):
        unknown = set(returned) - V1_OUTPUT_KEYS
        if unknown:
            raise TypeError(f"a V1 node returned {sorted(unknown)}: the V3 adapter carries only 'ui' and 'result'")
        return io.NodeOutput(*returned.get("result", ()), ui=returned.get("ui"))
    return io.NodeOutput(*returned)


def _hidden_values(cls) -> dict:
    """The V1 function's hidden arguments, from what V3 hands over as cls.hidden."""
    return {name: getattr(cls.hidden, member.name, None) for name, member in cls.PAL_HIDDEN.items()}


def _execute(cls, **inputs):
    v1 = cls.PAL_V1_CLASS
    return node_output(getattr(v1(), v1.FUNCTION)(**inputs, **_hidden_values(cls)))


async def _execute_async(cls, **inputs):
    v1 = cls.PAL_V1_CLASS
    return node_output(await getattr(v1(), v1.FUNCTION)(**inputs, **_hidden_values(cls)))


def _same_parameters(v1: type, name: str, call):
    """A classmethod `call(cls, **inputs)` with the parameter names of the V1 class's method `name`
    (ComfyUI reads them: they say which inputs the method takes)."""
    def forwarding(cls, *args, **kwargs):
        return call(cls, *args, **kwargs)
    declared = inspect.getattr_static(v1, name)
    function = declared.__func__ if isinstance(declared, (classmethod, staticmethod)) else declared
    parameters = list(inspect.signature(function).parameters.values())
    if not isinstance(declared, staticmethod):
        parameters = parameters[1:]  # cls or self
    forwarding.__signature__ = inspect.Signature(
        [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD), *parameters])
    return classmethod(forwarding)


def v3_node(node_id: str, v1: type, display_name: str | None = None) -> type:
    """A V3 node class (io.ComfyNode) whose schema and behaviour are those of the V1 class."""
    io = _io()
    function = getattr(v1, v1.FUNCTION)
    body = {
        "__doc__": v1.__doc__ or f"{node_id} on the V3 schema (from the V1 class {v1.__qualname__}).",
        "__module__": v1.__module__,
        "PAL_V1_CLASS": v1,
        "PAL_HIDDEN": schema_hidden(v1.INPUT_TYPES().get("hidden", {})),  # {V1 argument: io.Hidden}
        "define_schema": classmethod(lambda cls: define_schema(v1, node_id, display_name)),
        "execute": classmethod(_execute_async if inspect.iscoroutinefunction(function) else _execute),
    }
    if hasattr(v1, "VALIDATE_INPUTS"):
        body["validate_inputs"] = _same_parameters(v1, "VALIDATE_INPUTS", lambda cls, **kw: v1().VALIDATE_INPUTS(**kw))
    if hasattr(v1, "IS_CHANGED"):
        body["fingerprint_inputs"] = _same_parameters(v1, "IS_CHANGED", lambda cls, **kw: v1().IS_CHANGED(**kw))
    if hasattr(v1, "check_lazy_status"):
        body["check_lazy_status"] = _same_parameters(
            v1, "check_lazy_status", lambda cls, **kw: v1().check_lazy_status(**kw))
    return type(v1.__name__, (io.ComfyNode,), body)


def v3_nodes(classes: dict[str, type], display_names: dict[str, str]) -> list[type]:
    return [v3_node(node_id, v1, display_names.get(node_id)) for node_id, v1 in classes.items()]


def entrypoint(classes: dict[str, type], display_names: dict[str, str]):
    """The `comfy_entrypoint` ComfyUI calls: an async function returning the pack's ComfyExtension."""
    from comfy_api.latest import ComfyExtension

    nodes = v3_nodes(classes, display_names)

    class PALNodes(ComfyExtension):
        async def get_node_list(self):
            return list(nodes)

    async def comfy_entrypoint() -> ComfyExtension:
        return PALNodes()

    return comfy_entrypoint
