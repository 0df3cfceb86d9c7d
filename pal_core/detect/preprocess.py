"""PAL4VST's input contract: RGB on 0..255, resized to the network size, ImageNet mean/std.

The official script reads 8-bit RGB, resizes with PIL's bicubic filter and normalises. Here the
same happens on torch tensors on any device: values are quantised to 8 bits and resized with torch's
antialiased bicubic filter (PIL's kernel, a = -0.5) in PIL's two 8-bit passes (see `pil_like_resize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..config import SavedConfig

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Preprocess(SavedConfig):
    """How images become network input.

    `input_size` is the square size the network runs at (PAL4VST: 512); None runs it at each image's
    own size. It is saved in every checkpoint and is the detector's size unless the user asks for
    another (`load_detector(input_size=...)`, `Detector.with_input_size`).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255
    input_size: int | None = 512

    SKIPS_UNKNOWN_KEYS: ClassVar[bool] = True

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocess":
        # Files written before the input size was saved ran at each image's own size.
        return super().from_dict({"input_size": None, **values})

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images: [B, H, W, 3] float in 0..1 -> normalised float32 [B, 3, S, S] (or [B, 3, H, W])."""
        x = (images.float() * 255.0).round_().clamp_(0.0, 255.0).permute(0, 3, 1, 2)
        size = self.input_size
        if size is not None and tuple(x.shape[2:]) != (size, size):
            x = pil_like_resize(x, size, size)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def _resize_8bit(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    x = F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return x.round_().clamp_(0.0, 255.0)


def pil_like_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of 0..255 images [B, C, H, W] as Pillow does it for 8-bit images.

    Pillow resizes one axis at a time and rounds the intermediate image to 8 bits; it starts with the
    axis whose pass leaves the smaller intermediate image. Doing the same gives PIL's output exactly
    for all but a few pixels in 10^4 (off by one level: Pillow's fixed-point arithmetic).
    """
    in_h, in_w = x.shape[2:]
    if in_w * height < width * in_h:  # vertical pass first leaves fewer pixels
        return _resize_8bit(_resize_8bit(x, height, in_w), height, width)
    return _resize_8bit(_resize_8bit(x, in_h, width), height, width)
