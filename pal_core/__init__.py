"""PAL nodes' core library: find perceptual artifacts in generated images and fix them.

Implements "Perceptual Artifacts Localization for Image Synthesis Tasks" (PAL4VST, ICCV 2023).
Never imports ComfyUI: the node pack in `nodes/` is a thin layer over this package.

One concept a sub-package, lowest first; a module imports only from its own floor or below
(tests/test_import_graph.py), so data flows one way: image -> detector -> mask -> crop plan ->
inpainter -> composite.
    atomic, config, imageio, outputs, layouts, locks   files, saved settings, tensor layouts, run locks
    models/       the networks: Swin + UPerNet (mmseg converter beside it), PAL-lite, conv+BN folding
    detect/       Detector: input contract, device and precision, memory, masks and PAR
    hub/          model files: our format, every other a user may have, catalogue, downloads
    refinement/   zoom-in refinement: crop plan, inpainters, composite, refine()
    rank/         PAR over image sets: streaming scorer, score files, selection
    train/        synthetic data, training, distillation, evaluation
    verdicts, sheets                            what a person reads after a run
    workflow/     the headless runner
    cli/          the `pal` command
The names below are the public API.
"""

import importlib

# Public name -> the module that defines it. Imported on first use (PEP 562), so that `import pal_core`
# (and `pal --help`, which imports the package) does not pull in torch, OpenCV or timm.
_PUBLIC = {
    "Detector": ".detect.detector", "DetectorInfo": ".detect.detector",
    "Preprocess": ".detect.preprocess",
    "CheckpointError": ".hub.checkpoint", "DetectorCheckpoint": ".hub.checkpoint",
    "read_detector_file": ".hub.checkpoint", "save_detector_file": ".hub.checkpoint",
    "DEFAULT_MODEL": ".hub.loading", "ModelNotFoundError": ".hub.loading", "available_models": ".hub.loading",
    "load_detector": ".hub.loading",
    "RefineOptions": ".refinement.refine", "RefineResult": ".refinement.refine", "refine": ".refinement.refine",
}


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DEFAULT_MODEL", "Detector", "DetectorCheckpoint", "DetectorInfo", "ModelNotFoundError",
    "Preprocess", "RefineOptions", "RefineResult", "available_models", "load_detector", "read_detector_file",
    "refine", "save_detector_file",
]
