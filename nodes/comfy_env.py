"""ComfyUI's services when running inside ComfyUI, plain fallbacks when not (headless runner, tests).

The nodes call only these functions, so they behave the same in both worlds: model folders come
from `folder_paths` (or $PAL_MODELS_DIR and the shipped weights/), progress and interruption from
`comfy.utils` / `comfy.model_management`, devices from ComfyUI's manager (or CUDA when available).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

from pal_core.hub import model_store
from pal_core.workflow.engines import MODELS_ENV  # outside ComfyUI: a folder laid out like ComfyUI's models/

# Inside ComfyUI, its modules are loaded before any custom node. The pack only uses them then, and never
# imports ComfyUI itself: importing comfy.model_management sets up ComfyUI's devices from its command
# line, which is ComfyUI's job (and fails on a machine without a GPU unless ComfyUI was given --cpu).
if "folder_paths" in sys.modules and "comfy.model_management" in sys.modules:
    import comfy.model_management as model_management
    import comfy.utils as comfy_utils
    import folder_paths
else:  # headless: the pack must work without ComfyUI
    model_management = comfy_utils = folder_paths = None

DETECTOR_FOLDER = "pal4vst"


def in_comfyui() -> bool:
    return folder_paths is not None


def register_model_folders() -> None:
    """Registers models/pal4vst with ComfyUI (extra_model_paths.yaml can map it elsewhere), and tells
    pal_core to find and install catalogue models there (it never imports ComfyUI itself)."""
    if folder_paths is not None and DETECTOR_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(DETECTOR_FOLDER, os.path.join(folder_paths.models_dir, DETECTOR_FOLDER))
    model_store.register_folders(_detector_folders)


def _detector_folders() -> list[str]:
    return model_folders(DETECTOR_FOLDER)


def _headless_folder(kind: str) -> Path | None:
    root = os.environ.get(MODELS_ENV)
    return Path(root) / kind if root else None


def model_files(kind: str) -> list[str]:
    """File names in a model folder (ComfyUI's `models/<kind>`), for a combo input."""
    if folder_paths is not None:
        try:
            return list(folder_paths.get_filename_list(kind))
        except KeyError:
            return []
    folder = _headless_folder(kind)
    if folder is None or not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def model_folders(kind: str) -> list[str]:
    """The folders of a model kind (ComfyUI may map several through extra_model_paths.yaml)."""
    if folder_paths is not None:
        try:
            return list(folder_paths.get_folder_paths(kind))
        except KeyError:
            return []
    folder = _headless_folder(kind)
    return [str(folder)] if folder is not None else []


def sampler_names(fallback_samplers: list[str], fallback_schedulers: list[str]) -> tuple[list[str], list[str]]:
    """ComfyUI's sampler and scheduler names; the fallbacks outside ComfyUI (for listing inputs only)."""
    if model_management is None:
        return fallback_samplers, fallback_schedulers
    import comfy.samplers
    return list(comfy.samplers.KSampler.SAMPLERS), list(comfy.samplers.KSampler.SCHEDULERS)


def model_path(kind: str, name: str) -> str:
    """Full path of a file listed by `model_files`; a clear error when it is not there."""
    if folder_paths is not None:
        return folder_paths.get_full_path_or_raise(kind, name)
    folder = _headless_folder(kind)
    if folder is not None and (folder / name).is_file():
        return str(folder / name)
    raise FileNotFoundError(f"model '{name}' not found in models/{kind} "
                            f"(set {MODELS_ENV} to a folder holding {kind}/{name} when running outside ComfyUI)")


def torch_device() -> torch.device:
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def output_device() -> torch.device:
    """Where node outputs belong: ComfyUI's intermediate device (the CPU unless --gpu-only)."""
    if model_management is not None:
        return model_management.intermediate_device()
    return torch.device("cpu")


def check_interrupted() -> None:
    """Raises ComfyUI's interruption exception when the user pressed Cancel."""
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


@contextmanager
def detector_on_device(detector):
    """Inside ComfyUI, GPU memory belongs to its model manager: ask it to free room for the detector,
    let the detector load its weights for the work and park them on ComfyUI's offload device
    afterwards (`Detector.offload`), so ComfyUI's own models can use the memory between runs.
    Outside ComfyUI, or on the CPU, the weights simply stay where the detector keeps them."""
    if model_management is None or detector.device.type == "cpu":
        yield
        return
    size = sum(p.numel() * p.element_size() for p in detector.model.parameters())
    model_management.free_memory(size * 3, detector.device)  # weights plus room for activations
    detector.load()
    try:
        yield
    finally:
        detector.offload(model_management.unet_offload_device())
        model_management.soft_empty_cache()


def release_memory() -> None:
    if model_management is not None:
        model_management.soft_empty_cache()


class Progress:
    """ComfyUI's progress bar (each update is also a cancel point); silent outside ComfyUI.

    Call it as `progress(done, total)`: it is the callback `Detector.predict` and `refine` take, as
    ComfyUI's own upscale node hands its bar to the library.
    """

    def __init__(self, total: int):
        self.total = max(total, 1)
        self.done = 0
        self._bar = comfy_utils.ProgressBar(self.total) if comfy_utils is not None else None

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, max(total, 1)
        if self._bar is not None:
            self._bar.update_absolute(self.done, self.total)
        check_interrupted()

    def step(self, count: int = 1) -> None:
        self(self.done + count, self.total)
