"""OpenCV's classical inpainting (Telea's fast marching, or Navier-Stokes): the default, no weights.

OpenCV works on 8-bit CPU arrays, so crops go to the CPU, are inpainted one by one and come back;
pixels outside the mask are returned exactly as given (not through the 8-bit round trip).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import Inpainter

METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


class OpenCVInpainter(Inpainter):
    """`method` "telea" (default) or "ns" (Navier-Stokes). `radius` is the neighbourhood in pixels
    each filled pixel looks at; None scales it with the crop (1% of its side, at least 3), so a
    zoomed-in crop is filled as smoothly as a small one."""

    def __init__(self, method: str = "telea", radius: float | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown OpenCV inpainting method {method!r}; use one of {sorted(METHODS)}")
        if radius is not None and radius <= 0:
            raise ValueError(f"radius must be > 0, not {radius}")
        self.method = method
        self.radius = radius
        self.name = f"opencv-{method}"

    def _inpaint(self, crops: torch.Tensor, masks: torch.Tensor, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        side = min(crops.shape[1:3])
        radius = self.radius if self.radius is not None else max(3.0, side / 100)
        pixels = (crops.detach().float().clamp(0, 1) * 255).round().to("cpu", torch.uint8).numpy()
        holes = (masks.detach() > 0.5).to("cpu", torch.uint8).numpy()
        filled = np.stack([cv2.inpaint(np.ascontiguousarray(p), h, radius, METHODS[self.method])
                           for p, h in zip(pixels, holes)])
        result = torch.from_numpy(filled).to(crops.device, torch.float32) / 255.0
        repaint = (masks > 0.5).unsqueeze(-1)
        return torch.where(repaint, result.to(crops.dtype), crops)
