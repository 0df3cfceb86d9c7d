"""Which node classes the built-in runtime can use: our core nodes plus the node classes it is given.

pal_core knows no node pack by name: callers pass the classes (`pal run` passes those of the
installed node packs, see plugins.py; tests pass their own). As in ComfyUI, a pack class named like a
core node does not replace it; `extra` classes (tests, scripts) do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import core_nodes


@dataclass
class NodeRegistry(Mapping):
    classes: dict[str, type] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # class name -> "core", "pack" or "extra"
    problems: list[str] = field(default_factory=list)  # e.g. why a node pack could not be loaded

    def __getitem__(self, name: str) -> type:
        return self.classes[name]

    def __iter__(self):
        return iter(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def add(self, mappings: Mapping[str, type], origin: str, replace: bool) -> None:
        for name, cls in mappings.items():
            if replace or name not in self.classes:
                self.classes[name] = cls
                self.origins[name] = origin


def build_registry(extra: Mapping[str, type] | None = None, *, nodes: Mapping[str, type] | None = None,
                   problems: Iterable[str] = ()) -> NodeRegistry:
    """Core nodes, then `nodes` (node packs' NODE_CLASS_MAPPINGS), then `extra`. `problems` are kept
    to explain missing classes (e.g. a pack that failed to load)."""
    registry = NodeRegistry(problems=list(problems))
    registry.add(core_nodes.NODE_CLASS_MAPPINGS, "core", replace=True)
    if nodes:
        registry.add(nodes, "pack", replace=False)
    if extra:
        registry.add(extra, "extra", replace=True)
    return registry
