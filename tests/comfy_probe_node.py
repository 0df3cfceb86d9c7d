"""A test-only custom node, copied into the test ComfyUI's custom_nodes/ beside the PAL pack.

Run through /prompt, `PALHostProbe` reports (as UI text in /history) what another pack sees of the
process after the PAL pack was imported: where `pal_core` and `nodes` come from, and whether any folder
of the PAL pack landed on sys.path (it must not: the pack's `nodes/` would shadow ComfyUI's nodes.py).
`PALSchemaProbe` reports how ComfyUI registered the PAL nodes (V3 or V1) and what /object_info says of
each V3 node that its V1 class would not.
"""

import json
import sys


class PALHostProbe:
    CATEGORY = "testing"
    FUNCTION = "probe"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pack_folder": ("STRING", {"default": ""})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # never cached: every run reports the state now

    def probe(self, pack_folder):
        pal_core = sys.modules.get("pal_core")
        report = {
            "pal_core_file": getattr(pal_core, "__file__", None),
            "nodes_file": getattr(sys.modules.get("nodes"), "__file__", None),
            "pack_on_sys_path": [p for p in sys.path if pack_folder and pack_folder in p],
            "pal_modules": sorted(name for name in sys.modules if name.split(".")[0] in ("pal_core", "pal_nodes")),
        }
        return {"ui": {"text": [json.dumps(report)]}}


def v1_node_info(name: str, cls: type, display_name: str) -> dict:
    """/object_info's entry for a V1 class, field by field as ComfyUI 0.3.64's server.py builds it."""
    info = {"input": cls.INPUT_TYPES(),
            "input_order": {key: list(value) for key, value in cls.INPUT_TYPES().items()},
            "output": list(cls.RETURN_TYPES),
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "name": name, "display_name": display_name, "description": getattr(cls, "DESCRIPTION", ""),
            "category": getattr(cls, "CATEGORY", "sd"), "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    for flag in ("deprecated", "experimental", "api_node"):  # server.py leaves out a false flag; V3 says false
        info[flag] = bool(getattr(cls, flag.upper(), False))
    return info


class PALSchemaProbe:
    """For every PAL node ComfyUI registered: whether it is a V3 node, and how the /object_info entry ComfyUI
    serves for it differs from its V1 class's (each differing field: [served, V1])."""

    CATEGORY = "testing"
    FUNCTION = "probe"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")

    def probe(self):
        import nodes  # ComfyUI's, in the server process
        from comfy_api.internal import _ComfyNodeInternal

        report = {}
        for name, registered in nodes.NODE_CLASS_MAPPINGS.items():
            v1 = getattr(registered, "PAL_V1_CLASS", None)
            if not name.startswith("PAL") or name in NODE_CLASS_MAPPINGS:
                continue
            is_v3 = issubclass(registered, _ComfyNodeInternal)
            served = registered.GET_NODE_INFO_V1() if is_v3 else None
            expected = v1_node_info(name, v1, nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name)) if v1 else None
            differs = {key: [(served or {}).get(key), (expected or {}).get(key)]
                       for key in set(served or {}) | set(expected or {})
                       if key != "python_module" and (served or {}).get(key) != (expected or {}).get(key)}
            report[name] = {"v3": is_v3, "differs": differs}
        return {"ui": {"text": [json.dumps(report, default=str)]}}


NODE_CLASS_MAPPINGS = {"PALHostProbe": PALHostProbe, "PALSchemaProbe": PALSchemaProbe}
