"""ComfyUI node classes: thin adapters over pal_core (no algorithm lives here)."""

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
