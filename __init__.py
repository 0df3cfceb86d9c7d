"""ComfyUI entry point: ComfyUI imports this folder (custom_nodes/pal-nodes) as a package.

Everything here must import without ComfyUI as well: the headless runner and the tests load the
same mappings.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
