"""Inpainters for refinement, all behind `Inpainter.inpaint(crops, masks, prompts, seeds)`.

`make_inpainter("opencv" | "opencv-ns" | "diffusers:PATH")` builds one from the CLI's spelling.
The diffusers module is only imported when a diffusers inpainter is asked for.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Inpainter
from .opencv import OpenCVInpainter

__all__ = ["Inpainter", "OpenCVInpainter", "make_inpainter"]

WEIGHT_FREE = ("opencv", "opencv-ns")  # inpainters that need no model file
SPECS = (*WEIGHT_FREE, "diffusers:PATH")


def make_inpainter(spec: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                   **settings: Any) -> Inpainter:
    """An inpainter from its name: "opencv" (Telea), "opencv-ns" (Navier-Stokes) or "diffusers:PATH".

    `settings` are the diffusers sampling settings and `config`; OpenCV takes none of them.
    """
    if spec in ("opencv", "opencv-telea"):
        return OpenCVInpainter("telea")
    if spec == "opencv-ns":
        return OpenCVInpainter("ns")
    if spec.startswith("diffusers:") and len(spec) > len("diffusers:"):
        from .diffusers import load_diffusers_inpainter

        return load_diffusers_inpainter(spec[len("diffusers:"):], device=device, dtype=dtype, **settings)
    raise ValueError(f"unknown inpainter {spec!r}; use one of: {', '.join(SPECS)}")
