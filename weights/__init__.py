"""Package data, not code: the default detector shipped with the project (installed as pal_core.weights;
pal_core/hub/resources.py finds it)."""
