"""Checks that tensors handed to the nodes have ComfyUI's layouts, with messages that say how to fix them.

ComfyUI's IMAGE is float [B, H, W, C] (C = 3, channels last) in 0..1 and MASK is float [B, H, W]
(a single [H, W] mask is common and accepted). A tensor in another layout ([B, C, H, W] from a
torchvision habit, [H, W, C] without its batch, a flattened mask) would otherwise be read as
nonsense sizes or fail deep inside; here it fails at the node's door.
"""

from __future__ import annotations

import torch


class LayoutError(ValueError):
    """A tensor whose shape or type is not the layout an input needs."""


def check_images(images, name: str = "images", allow_empty: bool = False) -> torch.Tensor:
    """`images` as ComfyUI IMAGE [B, H, W, C], C in 1, 3, 4; raises LayoutError saying what is wrong.

    `allow_empty`: a batch of 0 images is fine (e.g. crops when no artifact was found).
    """
    if not isinstance(images, torch.Tensor):
        raise LayoutError(f"{name} is a {type(images).__name__}, not an IMAGE tensor [B, H, W, 3]")
    shape = tuple(images.shape)
    if not (images.is_floating_point() or images.dtype == torch.uint8):
        raise LayoutError(f"{name} has dtype {images.dtype}; an IMAGE is float in 0..1")
    if images.dim() == 3 and shape[-1] in (1, 3, 4):
        raise LayoutError(f"{name} has shape {list(shape)}, one image without its batch dimension; an IMAGE is "
                          f"[B, H, W, 3]: use images.unsqueeze(0)")
    if images.dim() != 4:
        raise LayoutError(f"{name} has shape {list(shape)}; an IMAGE is [B, H, W, 3] (batch, height, width, channels)")
    if shape[-1] not in (1, 3, 4):
        hint = (": it looks channels-first [B, C, H, W]; use images.permute(0, 2, 3, 1)"
                if shape[1] in (1, 3, 4) else "")
        raise LayoutError(f"{name} has shape {list(shape)}; an IMAGE has 3 channels last, [B, H, W, 3]{hint}")
    if (shape[0] == 0 and not allow_empty) or shape[1] == 0 or shape[2] == 0:
        raise LayoutError(f"{name} is empty (shape {list(shape)}); connect a node that outputs at least one image")
    return images


def check_mask(mask, name: str = "mask") -> torch.Tensor:
    """`mask` as ComfyUI MASK [B, H, W] (an [H, W] mask becomes [1, H, W]); raises LayoutError otherwise."""
    if not isinstance(mask, torch.Tensor):
        raise LayoutError(f"{name} is a {type(mask).__name__}, not a MASK tensor [B, H, W]")
    shape = tuple(mask.shape)
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    elif mask.dim() == 4 and shape[1] == 1:
        raise LayoutError(f"{name} has shape {list(shape)} ([B, 1, H, W]); a MASK is [B, H, W]: use mask[:, 0]")
    elif mask.dim() == 4 and shape[-1] in (1, 3, 4):
        raise LayoutError(f"{name} has shape {list(shape)}, which is an IMAGE; convert it with an Image To Mask node")
    elif mask.dim() != 3:
        raise LayoutError(f"{name} has shape {list(shape)}; a MASK is [B, H, W] (batch, height, width)")
    if mask.dtype == torch.bool:
        mask = mask.float()
    elif not mask.is_floating_point():
        raise LayoutError(f"{name} has dtype {mask.dtype}; a MASK is float in 0..1")
    if 0 in mask.shape[1:]:
        raise LayoutError(f"{name} has no pixels (shape {list(shape)})")
    return mask
