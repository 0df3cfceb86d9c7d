"""ComfyUI node classes: thin adapters over pal_core (no algorithm lives here)."""

from . import comfy_env, detection

comfy_env.register_model_folders()

NODE_CLASS_MAPPINGS: dict[str, type] = {**detection.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {**detection.NODE_DISPLAY_NAME_MAPPINGS}
