"""A test-only custom node, copied into the test ComfyUI's custom_nodes/ beside the PAL pack.

Run through /prompt, `PALHostProbe` reports (as UI text in /history) what another pack sees of the
process after the PAL pack was imported: where `pal_core` and `nodes` come from, and whether any folder
of the PAL pack landed on sys.path (it must not: the pack's `nodes/` would shadow ComfyUI's nodes.py).
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


NODE_CLASS_MAPPINGS = {"PALHostProbe": PALHostProbe}
