"""The one interface every inpainter implements: crops + masks + prompts/seeds -> crops.

Refinement hands an inpainter a batch of zoomed-in crops of equal size and gets the same batch back,
repainted where the masks are 1. Inpainters differ in everything else (OpenCV needs no weights, a
diffusion model needs a prompt and a seed), so the interface is kept this small; `Inpainter.inpaint`
checks inputs and outputs once for all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import torch


class Inpainter(ABC):
    """Repaints masked pixels of crops. Subclasses implement `_inpaint` on validated inputs."""

    name: str = "inpainter"
    # Crops sent to this inpainter should have sides that are multiples of this (VAE downsampling).
    multiple: int = 1
    # The square size crops are best inpainted at (a diffusion model's training size); None: any size.
    resolution: int | None = None

    def inpaint(self, crops: torch.Tensor, masks: torch.Tensor, prompts: str | Sequence[str] = "",
                seeds: int | Sequence[int] = 0) -> torch.Tensor:
        """crops float [N, h, w, 3] in 0..1, masks [N, h, w] (> 0.5 = repaint) -> [N, h, w, 3].

        One prompt or one per crop; one seed or one per crop. The result has the crops' device and
        dtype whatever the inpainter computes in.
        """
        if crops.dim() != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops have shape {tuple(crops.shape)}; expected [N, h, w, 3] (channels last)")
        if masks.shape != crops.shape[:3]:
            raise ValueError(f"masks have shape {tuple(masks.shape)}; expected {tuple(crops.shape[:3])} to match the crops")
        if not crops.is_floating_point():
            raise ValueError(f"crops have dtype {crops.dtype}; expected float in 0..1")
        count = crops.shape[0]
        prompt_list = _per_crop(prompts, count, "prompts", str)
        seed_list = _per_crop(seeds, count, "seeds", int)
        if count == 0:
            return crops.clone()
        result = self._inpaint(crops, masks, prompt_list, seed_list)
        if result.shape != crops.shape:
            raise RuntimeError(f"{self.name} returned shape {tuple(result.shape)} for crops {tuple(crops.shape)}")
        return result.to(device=crops.device, dtype=crops.dtype)

    @abstractmethod
    def _inpaint(self, crops: torch.Tensor, masks: torch.Tensor, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        """The inpainting itself; inputs are already checked, prompts and seeds are one per crop."""


def _per_crop(value, count: int, what: str, kind: type) -> list:
    """A single value repeated for every crop, or a sequence that must have one entry per crop."""
    if isinstance(value, kind) and not isinstance(value, bool):
        return [value] * count
    values = list(value)
    if len(values) != count:
        raise ValueError(f"got {len(values)} {what} for {count} crops; give one, or one per crop")
    if not all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{what} must be {kind.__name__} values, got {[type(v).__name__ for v in values]}")
    return values
