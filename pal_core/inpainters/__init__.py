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

WEIGHT_FREE = tuple(f"opencv-{method}" for method in METHODS)  # inpainters that need no model file
SPECS = ("opencv", *WEIGHT_FREE, "diffusers:PATH")


def available_weight_free() -> tuple[str, ...]:
    """The weight-free inpainters this OpenCV build has (the xphoto ones need opencv-contrib)."""
    return tuple(spec for spec in WEIGHT_FREE if has_xphoto() or spec[len("opencv-"):] not in XPHOTO)


DEFAULT = "opencv"  # what `opencv` means: the weight-free method chosen by benchmarks/inpaint.py
DEFAULT_METHOD = "telea"


def make_inpainter(spec: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                   **settings: Any) -> Inpainter:
    """An inpainter from its name: "opencv" (the default weight-free method), "opencv-METHOD" with a
    method of `opencv.METHODS`, optionally "@SIZE" to inpaint at most SIZE pixels wide (e.g.
    "opencv-fsr-fast@256"), or "diffusers:PATH".

    `settings` are the diffusers sampling settings and `config`; OpenCV takes none of them.
    """
    if spec == "opencv" or spec.startswith("opencv-"):
        method, _, size = (DEFAULT_METHOD if spec == "opencv" else spec[len("opencv-"):]).partition("@")
        if method not in METHODS or (size and not size.isdigit()):
            raise ValueError(f"unknown inpainter {spec!r}; use one of: {', '.join(SPECS)} (OpenCV ones may end in "
                             "@SIZE, e.g. opencv-fsr-fast@256)")
        return OpenCVInpainter(method, work_size=int(size) if size else None)
    if spec.startswith("diffusers:") and len(spec) > len("diffusers:"):
        from .diffusers import load_diffusers_inpainter

        return load_diffusers_inpainter(spec[len("diffusers:"):], device=device, dtype=dtype, **settings)
    raise ValueError(f"unknown inpainter {spec!r}; use one of: {', '.join(SPECS)}")
