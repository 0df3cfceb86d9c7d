"""Inpainters for refinement, all behind `Inpainter.inpaint(crops, masks, prompts, seeds)`.

`make_inpainter("opencv" | "opencv-ns" | ... | "diffusers:PATH")` builds one from the CLI's spelling.
The diffusers module is only imported when a diffusers inpainter is asked for.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Inpainter
from .opencv import METHODS, XPHOTO, OpenCVInpainter, has_xphoto

__all__ = ["Inpainter", "OpenCVInpainter", "make_inpainter"]

# Chosen by benchmarks/inpaint.py (docs/benchmarks.md, "Which weight-free inpainter"): frequency selective
# reconstruction at 128 px keeps the most fixes `pal fix` re-detects, at the best SSIM, in < 1 s a crop.
DEFAULT = "opencv-fsr-fast@128"
FALLBACK = "opencv-ns"  # the best of the methods every OpenCV build has, where opencv-contrib is missing
# The inpainters that need no model file, the default first.
WEIGHT_FREE = (DEFAULT, *(f"opencv-{method}" for method in METHODS))
SPECS = ("opencv", *WEIGHT_FREE, "diffusers:PATH")


def default_weight_free() -> str:
    """What `opencv` means here: the benchmark's choice, or the fallback when OpenCV lacks xphoto."""
    return DEFAULT if has_xphoto() else FALLBACK


def available_weight_free() -> tuple[str, ...]:
    """The weight-free inpainters this OpenCV build has (the xphoto ones need opencv-contrib), default first."""
    usable = [spec for spec in WEIGHT_FREE if has_xphoto() or spec[len("opencv-"):].partition("@")[0] not in XPHOTO]
    return tuple(sorted(usable, key=lambda spec: spec != default_weight_free()))


def make_inpainter(spec: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                   **settings: Any) -> Inpainter:
    """An inpainter from its name: "opencv" (`default_weight_free()`), "opencv-METHOD" with a
    method of `opencv.METHODS`, optionally "@SIZE" to inpaint at most SIZE pixels wide (e.g.
    "opencv-fsr-fast@256"), or "diffusers:PATH".

    `settings` are the diffusers sampling settings and `config`; OpenCV takes only `radius` (telea / ns).
    """
    if spec == "opencv" or spec.startswith("opencv-"):
        method, _, size = (default_weight_free() if spec == "opencv" else spec)[len("opencv-"):].partition("@")
        if method not in METHODS or (size and not size.isdigit()):
            raise ValueError(f"unknown inpainter {spec!r}; use one of: {', '.join(SPECS)} (OpenCV ones may end in "
                             "@SIZE, e.g. opencv-fsr-fast@256)")
        return OpenCVInpainter(method, radius=settings.get("radius"), work_size=int(size) if size else None)
    if spec.startswith("diffusers:") and len(spec) > len("diffusers:"):
        from .diffusers import load_diffusers_inpainter

        return load_diffusers_inpainter(spec[len("diffusers:"):], device=device, dtype=dtype, **settings)
    raise ValueError(f"unknown inpainter {spec!r}; use one of: {', '.join(SPECS)}")
