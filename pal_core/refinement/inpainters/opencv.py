"""OpenCV's classical inpainting: no weights, CPU only.

- "telea" (fast marching) and "ns" (Navier-Stokes) are in every OpenCV build: they propagate the
  surrounding colours inward, quick but smooth (a large hole becomes a smear).
- "fsr-fast", "fsr-best" (frequency selective reconstruction) and "shiftmap" (exemplar based:
  copies texture from elsewhere in the crop) are in opencv-contrib's `xphoto` module.

OpenCV works on 8-bit CPU arrays, so crops go to the CPU, are inpainted one by one and come back;
pixels outside the mask are returned exactly as given (not through the 8-bit round trip).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import Inpainter

CLASSIC = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
XPHOTO = {"fsr-fast": "INPAINT_FSR_FAST", "fsr-best": "INPAINT_FSR_BEST", "shiftmap": "INPAINT_SHIFTMAP"}
METHODS = (*CLASSIC, *XPHOTO)
CONTRIB_HINT = ("it is in opencv-contrib's xphoto module, which this OpenCV lacks. Install the contrib build "
                "in place of the plain one (two OpenCV wheels in one environment overwrite each other's files): "
                "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-contrib-python-headless")


def has_xphoto() -> bool:
    return hasattr(cv2, "xphoto") and hasattr(cv2.xphoto, "inpaint")


class OpenCVInpainter(Inpainter):
    """`method`: one of METHODS. `radius` (telea / ns) is the neighbourhood in pixels each filled
    pixel looks at; None scales it with the crop (1% of its side, at least 3), so a zoomed-in crop
    is filled as smoothly as a small one. `work_size`: crops larger than this are inpainted at this
    size and the fill is scaled back (the exemplar methods' cost grows fast with size; crops of
    small regions are enlarged for diffusion models and hold no more detail than this)."""

    def __init__(self, method: str = "telea", radius: float | None = None, work_size: int | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown OpenCV inpainting method {method!r}; use one of {list(METHODS)}")
        if method in XPHOTO and not has_xphoto():
            raise ValueError(f"OpenCV inpainting method {method!r}: {CONTRIB_HINT}")
        if radius is not None and radius <= 0:
            raise ValueError(f"radius must be > 0, not {radius}")
        if work_size is not None and work_size < 16:
            raise ValueError(f"work_size must be >= 16 pixels, not {work_size}")
        self.method = method
        self.radius = radius
        self.work_size = work_size
        self.name = f"opencv-{method}" + (f"@{work_size}" if work_size else "")

    def _inpaint(self, crops: torch.Tensor, masks: torch.Tensor, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        pixels = (crops.detach().float().clamp(0, 1) * 255).round().to("cpu", torch.uint8).numpy()
        holes = (masks.detach() > 0.5).to("cpu", torch.uint8).numpy()
        filled = np.stack([self._fill(np.ascontiguousarray(p), h) for p, h in zip(pixels, holes)])
        result = torch.from_numpy(filled).to(crops.device, torch.float32) / 255.0
        repaint = (masks > 0.5).unsqueeze(-1)
        return torch.where(repaint, result.to(crops.dtype), crops)

    def _fill(self, pixels: np.ndarray, hole: np.ndarray) -> np.ndarray:
        """uint8 [h, w, 3] and hole [h, w] (1 = repaint) -> the filled uint8 image."""
        height, width = hole.shape
        if self.work_size is None or max(height, width) <= self.work_size:
            return self._fill_at_size(pixels, hole)
        scale = self.work_size / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
        small_hole = (cv2.resize(hole, size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
        # A hole pixel lost in shrinking would come back unfilled: grow the small hole by one pixel.
        small_hole = cv2.dilate(small_hole, np.ones((3, 3), np.uint8))
        return cv2.resize(self._fill_at_size(small, small_hole), (width, height), interpolation=cv2.INTER_CUBIC)

    def _fill_at_size(self, pixels: np.ndarray, hole: np.ndarray) -> np.ndarray:
        if not hole.any():  # nothing to do (and xphoto's shift-map crashes on an empty hole)
            return pixels
        if self.method in CLASSIC:
            radius = self.radius if self.radius is not None else max(3.0, min(hole.shape) / 100)
            return cv2.inpaint(pixels, hole, radius, CLASSIC[self.method])
        if hole.all():  # the exemplar methods have nothing to copy from: leave the crop as it is
            return pixels
        filled = np.zeros_like(pixels)
        # xphoto's mask is the other way round: non-zero marks the pixels to keep.
        known = np.where(hole > 0, 0, 255).astype(np.uint8)
        cv2.xphoto.inpaint(pixels, known, filled, getattr(cv2.xphoto, XPHOTO[self.method]))
        return filled
