"""Package data, not code: example ComfyUI workflows, their API-format twins (api/) and the images they
load (input/); installed as pal_core.examples (pal_core/hub/resources.py finds them)."""
