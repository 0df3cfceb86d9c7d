"""PAL4VST's input contract: RGB on 0..255, resized to the network size, ImageNet mean/std.

The official script reads 8-bit RGB, resizes with PIL's bicubic filter and normalises. Here the
same happens on torch tensors on any device: values are quantised to 8 bits, resized with torch's
antialiased bicubic filter (PIL's kernel, a = -0.5) and rounded back to 8 bits as PIL's output is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Preprocess:
    """How images become network input. `input_size` None runs the network at the image's own size."""

    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255
    input_size: int | None = 512

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocess":
        return cls(mean=tuple(values["mean"]), std=tuple(values["std"]), input_size=values.get("input_size"))

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: torch.Tensor, input_size: int | None) -> torch.Tensor:
        """images: [B, H, W, 3] float in 0..1 -> normalised float32 [B, 3, S, S] (or [B, 3, H, W])."""
        x = (images.float() * 255.0).round_().clamp_(0.0, 255.0).permute(0, 3, 1, 2)
        if input_size is not None and tuple(x.shape[2:]) != (input_size, input_size):
            x = F.interpolate(x, size=(input_size, input_size), mode="bicubic", antialias=True, align_corners=False)
            x = x.round_().clamp_(0.0, 255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std
