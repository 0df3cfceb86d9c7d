"""Which engine runs a workflow: the built-in runtime (core nodes + node packs, no ComfyUI) or
ComfyUI's own executor, in-process (offered by a node pack, see plugins.py).

`auto` takes ComfyUI when one is given or can be found (`comfyui=DIR`, else $COMFYUI_PATH, else a
ComfyUI importable from this Python: the engine plugin looks), otherwise the built-in runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import plugins
from .errors import WorkflowError

ENGINES = ("auto", "builtin", "comfyui")
COMFYUI_ENV = "COMFYUI_PATH"
MODELS_ENV = "PAL_MODELS_DIR"  # outside ComfyUI, node packs find model files in this models/-like folder


class EngineUnavailable(WorkflowError):
    """The engine asked for cannot run here (no ComfyUI found, or no package offers the engine)."""


@dataclass
class EngineJob:
    """Everything an engine needs to run one workflow."""

    workflow: dict  # as read: API or UI format
    base_dir: Path | None  # the workflow file's folder; None for a workflow given as data
    input_dir: Path | None = None
    output_dir: Path | None = None
    preview_dir: Path | None = None
    models_dir: Path | None = None  # a folder laid out like ComfyUI's models/
    extra_model_paths: list[Path] = field(default_factory=list)  # ComfyUI extra_model_paths.yaml files
    overrides: object = None
    progress: Callable[[str], None] | None = None
    comfyui: Path | None = None  # ComfyUI's folder (the comfyui engine)

    def input_folder_beside(self) -> Path | None:
        """An `input/` folder beside the workflow file, where the examples keep their images."""
        return input_folder_beside(self.base_dir)


API_TWINS_FOLDER = "api"  # the examples keep their API-format twins in api/, beside the UI files and input/


def input_folder_beside(base_dir: Path | None) -> Path | None:
    """The `input/` folder beside a workflow file (`base_dir` is its folder), where the examples keep their
    images; for an API twin in an api/ folder, the `input/` beside that folder (its UI file's)."""
    if base_dir is None:
        return None
    candidates = [base_dir] + ([base_dir.parent] if base_dir.name == API_TWINS_FOLDER else [])
    return next((folder / "input" for folder in candidates if (folder / "input").is_dir()), None)


def choose_engine(engine: str, comfyui: str | os.PathLike | None = None,
                  notes: list[str] | None = None) -> tuple[str, object | None, Path | None]:
    """("builtin", None, None) or ("comfyui", the engine plugin, ComfyUI's folder). Where ComfyUI is, and
    what a ComfyUI folder looks like, only the engine plugin knows (`locate`, `looks_like_comfyui`).

    A $COMFYUI_PATH that names no ComfyUI (a moved or deleted install) does not stop "auto": it runs on the
    built-in runtime and says so in `notes`; "comfyui" is refused with the variable named."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "builtin":
        return "builtin", None, None
    plugin = plugins.load_engine("comfyui")
    if plugin is None:
        if engine == "comfyui":
            raise EngineUnavailable(f"no installed package offers the comfyui engine (entry point group "
                                    f"'{plugins.ENGINES}'); it comes with the PAL node pack: pip install -e "
                                    "<pal-nodes checkout>")
        return "builtin", None, None
    folder = plugin.locate(comfyui)
    if folder is not None and comfyui is None and _stale_variable(plugin, folder):
        problem = (f"${COMFYUI_ENV} is {os.environ.get(COMFYUI_ENV)}, which is not a ComfyUI folder (no execution.py, "
                   "nodes.py, folder_paths.py and comfy/ there)")
        if engine == "comfyui":
            raise EngineUnavailable(f"{problem}; set it to the folder ComfyUI runs from (the one with main.py), "
                                    "or pass --comfyui DIR")
        if notes is not None:
            notes.append(f"{problem}, so the built-in runtime ran this workflow; fix or unset {COMFYUI_ENV} to "
                         "run on ComfyUI's engine")
        return "builtin", None, None
    if folder is not None:
        return "comfyui", plugin, folder
    if engine == "comfyui":
        raise EngineUnavailable(f"the comfyui engine needs ComfyUI: pass --comfyui DIR (ComfyUI's folder, the "
                                f"one with main.py) or set {COMFYUI_ENV}")
    return "builtin", None, None


def _stale_variable(plugin, folder: Path) -> bool:
    """Whether `folder` came from $COMFYUI_PATH and the plugin says it is no ComfyUI."""
    looks_like = getattr(plugin, "looks_like_comfyui", None)
    from_variable = bool(os.environ.get(COMFYUI_ENV)) and Path(os.environ[COMFYUI_ENV]).expanduser().absolute() == folder
    return looks_like is not None and from_variable and not looks_like(folder)


@contextmanager
def models_folder(models_dir: str | os.PathLike | None):
    """The built-in runtime's models folder for one run: $PAL_MODELS_DIR set while it runs, then restored."""
    if models_dir is None:
        yield
        return
    before = os.environ.get(MODELS_ENV)
    os.environ[MODELS_ENV] = str(Path(models_dir).absolute())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MODELS_ENV, None)
        else:
            os.environ[MODELS_ENV] = before
