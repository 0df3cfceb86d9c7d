"""What installed packages offer `pal run`: node packs and engines, found through entry points.

pal_core names no node pack and no host: a package declares what it offers in its pyproject.toml,

    [project.entry-points."pal_core.node_packs"]
    pal = "pal_nodes:NODE_CLASS_MAPPINGS"          # a mapping {class name: node class}
    [project.entry-points."pal_core.engines"]
    comfyui = "pal_nodes.comfy_engine"              # locate(folder or None) -> Path | None, run(EngineJob); optional looks_like_comfyui(folder) -> bool

and `pal run` loads them only when it needs them. This is Python's standard plugin mechanism
(importlib.metadata), so another package's nodes run the same way, and pal_core installed alone
still runs graphs of core nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

NODE_PACKS = "pal_core.node_packs"
ENGINES = "pal_core.engines"


def _declared(group: str) -> list[EntryPoint]:
    return sorted(entry_points(group=group), key=lambda point: point.name)


def _describe(point: EntryPoint, error: BaseException) -> str:
    where = f" (package {point.dist.name})" if getattr(point, "dist", None) is not None else ""
    return f"node pack '{point.name}'{where} could not be loaded from {point.value}: {type(error).__name__}: {error}"


def load_node_packs() -> tuple[dict[str, type], list[str]]:
    """The node classes of every installed node pack, and a line for each pack that failed to load
    (a broken pack must not stop graphs that do not use it). The first pack to declare a name wins."""
    classes: dict[str, type] = {}
    problems: list[str] = []
    for point in _declared(NODE_PACKS):
        try:
            mappings = point.load()
        except Exception as error:
            problems.append(_describe(point, error))
            continue
        if not isinstance(mappings, Mapping):
            problems.append(f"node pack '{point.name}' ({point.value}) is a {type(mappings).__name__}, "
                            "not a mapping of class names to node classes")
            continue
        for name, cls in mappings.items():
            classes.setdefault(name, cls)
    return classes, problems


def engine_names() -> list[str]:
    return [point.name for point in _declared(ENGINES)]


def load_engine(name: str):
    """The engine (an object, usually a module, with `locate(explicit_folder_or_None) -> Path | None`
    and `run(EngineJob) -> RunResult`), or None when no installed package offers it. Import errors of
    an engine that is installed propagate: they say what is broken."""
    for point in _declared(ENGINES):
        if point.name == name:
            return point.load()
    return None
