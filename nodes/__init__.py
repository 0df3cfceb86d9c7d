"""ComfyUI node classes: thin adapters over pal_core (no algorithm lives here)."""

from . import comfy_env, detection, inpainting, refinement

comfy_env.register_model_folders()

_MODULES = (detection, refinement, inpainting)
NODE_CLASS_MAPPINGS: dict[str, type] = {k: v for m in _MODULES for k, v in m.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {k: v for m in _MODULES for k, v in m.NODE_DISPLAY_NAME_MAPPINGS.items()}
