"""How well an inpainter restored a region whose clean original is known: PSNR and SSIM inside a mask.

Used by `benchmarks/inpaint.py`, where synthetic artifacts (`pal_core.train.artifacts`) give a damaged
image, its exact mask and the clean original. Images are uint8 (or float in 0..255) arrays [H, W, 3];
masks bool [H, W]. Only the masked pixels count: outside them every method returns the input.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from ..imageio import to_uint8
from .inpainters.base import Inpainter
from .refine import RefineOptions, RefineResult, refine

PEAK = 255.0
# SSIM as defined by Wang et al. (2004): Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * PEAK) ** 2
SSIM_C2 = (0.03 * PEAK) ** 2


def masked_psnr(result: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the masked pixels (all channels); inf when they are identical."""
    mask = _check(result, reference, mask)
    difference = result.astype(np.float64)[mask] - reference.astype(np.float64)[mask]
    mse = float(np.mean(difference ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PEAK ** 2 / mse)


def ssim_map(result: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM [H, W], the mean over the channels of each channel's local SSIM."""
    x, y = result.astype(np.float64), reference.astype(np.float64)

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (0, 0), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mean_x, mean_y = blur(x), blur(y)
    var_x = blur(x * x) - mean_x ** 2
    var_y = blur(y * y) - mean_y ** 2
    covariance = blur(x * y) - mean_x * mean_y
    ssim = ((2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)) / (
        (mean_x ** 2 + mean_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2))
    return ssim.mean(axis=-1) if ssim.ndim == 3 else ssim


def masked_ssim(result: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Mean SSIM over the masked pixels (1.0 when they and their neighbourhoods are identical)."""
    mask = _check(result, reference, mask)
    return float(ssim_map(result, reference)[mask].mean())


def _check(result: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if result.shape != reference.shape:
        raise ValueError(f"result {result.shape} and reference {reference.shape} differ in shape")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != result.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the images {result.shape[:2]}")
    if not mask.any():
        raise ValueError("the mask is empty: there is nothing to score")
    return mask


class KnownMask:
    """A 'detector' that returns a mask known in advance: runs refinement on exactly the damaged pixels."""

    def __init__(self, mask: np.ndarray):
        self.mask = torch.from_numpy(np.asarray(mask, dtype=np.float32))

    def predict(self, images: torch.Tensor, progress=None, threshold: float = 0.5) -> torch.Tensor:
        """The known mask for every image; it is 0/1, so any threshold cuts it the same."""
        masks = self.mask.expand(images.shape[0], *self.mask.shape).to(images.device)
        if progress is not None:
            progress(images.shape[0], images.shape[0])
        return masks


def repaint(damaged: np.ndarray, mask: np.ndarray, inpainter: Inpainter,
            options: RefineOptions = RefineOptions(redetect=False)) -> tuple[np.ndarray, RefineResult]:
    """`damaged` (uint8 [H, W, 3]) refined as `pal fix` would, with `mask` as the detector's verdict:
    dilated, cropped, zoomed, inpainted and blended back. Returns the uint8 result and the details."""
    image = torch.from_numpy(np.ascontiguousarray(damaged)).float().div(255.0).unsqueeze(0)
    result = refine(image, KnownMask(mask), inpainter, options)
    return to_uint8(result.images[0]), result
