"""Where the data shipped with the project is: the default models and the example workflows.

Installed (`pip install .`, a wheel, or `pip install -e .`), the repository's weights/ and workflows/
are package data, `pal_core.weights` and `pal_core.examples`, found through importlib.resources.
Cloned into ComfyUI's custom_nodes/ and not installed, the pack's __init__.py registers its folder's
weights/ here instead. Folders in $PAL_WEIGHTS_DIR are searched first.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

WEIGHTS_ENV = "PAL_WEIGHTS_DIR"
WEIGHTS_PACKAGE = "pal_core.weights"
EXAMPLES_PACKAGE = "pal_core.examples"

_registered_weights: list[Path] = []


def register_weights_dir(folder: str | os.PathLike) -> None:
    """Adds a folder of shipped models (`<name>.safetensors`), searched after $PAL_WEIGHTS_DIR."""
    folder = Path(folder).resolve()
    if folder not in _registered_weights:
        _registered_weights.append(folder)


def package_data_dir(package: str) -> Path | None:
    """The folder of an installed data package, or None when it is not installed."""
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.is_dir() else None  # not a folder on disk (a zip import): nothing to list


def weights_dirs() -> list[Path]:
    """Where shipped models are looked up, in order: $PAL_WEIGHTS_DIR, registered folders, package data."""
    dirs = [Path(p) for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    dirs += _registered_weights
    installed = package_data_dir(WEIGHTS_PACKAGE)
    if installed is not None and installed not in dirs:
        dirs.append(installed)
    return dirs


def examples_dir() -> Path | None:
    """The example ComfyUI workflows (UI format, api/ twins, input/ images), when installed."""
    return package_data_dir(EXAMPLES_PACKAGE)
