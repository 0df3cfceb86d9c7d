"""ComfyUI entry point: ComfyUI imports this folder (custom_nodes/<folder>) as a package.

Everything here must import without ComfyUI as well: the headless runner and the tests load the
same mappings.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # loaded as a plain module (pytest does so when the folder's name is no valid package name)
    from pal_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

# ComfyUI serves this folder's .js files to the browser: web/pal_results.js shows PAR on the nodes.
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
