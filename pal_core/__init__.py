"""PAL nodes' core library: find perceptual artifacts in generated images and fix them.

Implements "Perceptual Artifacts Localization for Image Synthesis Tasks" (PAL4VST, ICCV 2023).
Never imports ComfyUI: the node pack in `nodes/` is a thin layer over this package.
"""

from .detect.detector import Detector, DetectorInfo
from .detect.preprocess import Preprocess
from .hub.checkpoint import CheckpointError, DetectorCheckpoint, read_detector_file, save_detector_file
from .hub.loading import DEFAULT_MODEL, ModelNotFoundError, available_models, load_detector
from .refinement.refine import RefineOptions, RefineResult, refine

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "DEFAULT_MODEL", "Detector", "DetectorCheckpoint", "DetectorInfo", "ModelNotFoundError",
    "Preprocess", "RefineOptions", "RefineResult", "available_models", "load_detector", "read_detector_file",
    "refine", "save_detector_file",
]
