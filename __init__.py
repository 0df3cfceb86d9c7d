"""ComfyUI entry point: ComfyUI imports this folder (custom_nodes/<folder>) as a package.

ComfyUI-Manager and the Comfy registry clone the repository and install only requirements.txt, so the
library `pal_core` is loaded from this folder, under its own name only: the folder itself never goes
on sys.path (its `nodes/` would shadow ComfyUI's nodes.py, its tests/ and tools/ other packs' modules).
The folder's weights/ are registered with pal_core as the shipped models.

Everything here must import without ComfyUI as well: the headless runner and the tests load the
same mappings. Inside a ComfyUI that loads V3 extensions the pack offers `comfy_entrypoint` (the same
nodes on the V3 schema, nodes/v3.py) instead of the mappings; elsewhere, V1 `NODE_CLASS_MAPPINGS`.
"""

import importlib
import importlib.util
import sys
from pathlib import Path

_FOLDER = Path(__file__).resolve().parent


def _load_pal_core():
    """pal_core from this folder, unless one is already imported (then that one, e.g. an editable install)."""
    loaded = sys.modules.get("pal_core")
    if loaded is not None:
        return loaded
    package = _FOLDER / "pal_core"
    spec = importlib.util.spec_from_file_location("pal_core", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["pal_core"] = module  # before running it, so its own imports of pal_core.* resolve here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["pal_core"]
        raise
    return module


_load_pal_core()
importlib.import_module("pal_core.hub.resources").register_weights_dir(_FOLDER / "weights")

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, v3
else:  # loaded as a plain module (pytest does so when the folder's name is no valid package name)
    from pal_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, v3

# ComfyUI serves this folder's .js files to the browser: web/pal_results.js shows PAR on the nodes.
WEB_DIRECTORY = "./web"

if v3.host_loads_v3():
    # ComfyUI reads comfy_entrypoint only from a pack without NODE_CLASS_MAPPINGS: offer the V3 nodes alone.
    comfy_entrypoint = v3.entrypoint(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    del NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
else:
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
