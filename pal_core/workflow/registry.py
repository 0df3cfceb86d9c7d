"""Which node classes a workflow can use: our core nodes, the PAL node pack, and any extra classes.

The pack is found as the repository's nodes/ folder when pal_core runs from a source checkout (so a
checkout runs its own nodes), else as the installed package `pal_nodes`. As in ComfyUI, a pack class
named like a core node does not replace it; classes passed explicitly (tests, scripts) do.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import core_nodes

PACK_MODULE = "pal_nodes"


@dataclass
class NodeRegistry(Mapping):
    classes: dict[str, type] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # class name -> "core", "pack" or "extra"
    problems: list[str] = field(default_factory=list)  # e.g. why the pack could not be imported

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


def _checkout_nodes_folder() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    folder = root / "nodes"
    if (folder / "__init__.py").is_file() and (root / "pyproject.toml").is_file():
        return folder
    return None


def _import_pack():
    """The pack module: already imported, the checkout's nodes/ folder, or the installed package."""
    if PACK_MODULE in sys.modules:
        return sys.modules[PACK_MODULE]
    folder = _checkout_nodes_folder()
    if folder is None:
        return importlib.import_module(PACK_MODULE)
    spec = importlib.util.spec_from_file_location(PACK_MODULE, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_MODULE] = module  # before running it, so its relative imports resolve
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[PACK_MODULE]
        raise
    return module


def pack_mappings() -> tuple[dict[str, type], str | None]:
    """(NODE_CLASS_MAPPINGS of the PAL node pack, None) or ({}, why it could not be loaded)."""
    try:
        module = _import_pack()
    except Exception as error:
        return {}, f"the PAL node pack could not be imported ({type(error).__name__}: {error})"
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if not isinstance(mappings, Mapping):
        return {}, f"the PAL node pack ({getattr(module, '__file__', module)}) has no NODE_CLASS_MAPPINGS"
    return dict(mappings), None


def build_registry(extra: Mapping[str, type] | None = None, include_pack: bool = True) -> NodeRegistry:
    registry = NodeRegistry()
    registry.add(core_nodes.NODE_CLASS_MAPPINGS, "core", replace=True)
    if include_pack:
        mappings, problem = pack_mappings()
        registry.add(mappings, "pack", replace=False)
        if problem:
            registry.problems.append(problem)
    if extra:
        registry.add(extra, "extra", replace=True)
    return registry
