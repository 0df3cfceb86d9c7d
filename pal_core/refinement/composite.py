"""Putting inpainted crops back: feathered blend masks, colour matching, and a bit-exact outside.

For each region of a `CropPlan`, the blend weight is the region's mask grown outward and blurred,
so the seam falls in a band around the fix rather than on the artifact's edge. Outside every blend
region the output is the input, bit for bit (blending is applied through `torch.where`, never by
multiplying with a zero weight, which would round).

The inpainter's *change* is what is resized back and added: a crop is shrunk or enlarged to the
working size, and pasting the resized result would blur (or alias) pixels the inpainter never
touched. Where the inpainter changed a pixel, the original's detail there is dropped (it is the
artifact); where it changed nothing, the original stays exactly as it was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..detect.masks import dilate
from .color import match_color
from .crops import CropPlan, clip_box

DEFAULT_GROW = 0.02  # fraction of the crop side kept fully inpainted beyond the mask
DEFAULT_FEATHER = 0.06  # fraction of the crop side over which the fix fades into the original
CHANGE_TOLERANCE = 2.0 / 255.0  # a change below this counts as "untouched" (8-bit rounding, VAE noise)
RING_WIDTH = 0.06  # colour-matching ring, as a fraction of the working size
MIN_RING_PIXELS = 64  # fewer pixels give no reliable colour statistics


@dataclass
class CompositeResult:
    images: torch.Tensor  # [B, H, W, C], the input's dtype and device
    blend_mask: torch.Tensor  # float32 [B, H, W] in 0..1: how much of each pixel comes from a fix


def blend_weights(region_mask: torch.Tensor, box: tuple[int, int, int, int], height: int, width: int,
                  grow: float = DEFAULT_GROW, feather: float = DEFAULT_FEATHER) -> torch.Tensor:
    """Float [side, side] in 0..1: 1 on the mask and `grow` x side beyond it, fading to 0 over
    `feather` x side, and 0 at crop edges that lie inside the image (so no seam at the crop border).

    Padding outside the image repeats the mask's edge before blurring: a region touching the image
    border stays fully fixed up to the border instead of fading there.
    """
    side = region_mask.shape[0]
    grow_px = max(1, round(grow * side))
    half = max(1, math.ceil(feather * side / 2))
    grown = dilate(region_mask, grow_px + half).float()
    grown = _replicate_outside(grown, box, height, width)
    soft = _gaussian_blur(grown, half)
    soft = soft * _edge_taper(box, height, width, 2 * half, soft.device)
    return torch.maximum(soft, region_mask.float())


def _replicate_outside(mask: torch.Tensor, box, height: int, width: int) -> torch.Tensor:
    """Fills the part of a square mask outside the image with the mask's nearest in-image values."""
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = clip_box(box, height, width)
    inside = mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    pads = (cx0 - x0, x1 - cx1, cy0 - y0, y1 - cy1)
    if not any(pads):
        return mask
    return F.pad(inside[None, None], pads, mode="replicate")[0, 0]


def _gaussian_blur(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian (sigma = radius / 2, cut at `radius`) with replicate padding."""
    taps = torch.arange(-radius, radius + 1, device=mask.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / (radius / 2.0)) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(mask[None, None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[0, 0].clamp(0.0, 1.0)


def _edge_taper(box, height: int, width: int, length: int, device) -> torch.Tensor:
    """Weights [side, side] rising from 0 to 1 over `length` pixels from each crop edge inside the image."""
    x0, y0, x1, y1 = box
    side = x1 - x0

    def ramp(starts_inside: bool, ends_inside: bool) -> torch.Tensor:
        index = torch.arange(side, device=device, dtype=torch.float32)
        r = torch.ones(side, device=device)
        if starts_inside:
            r = torch.minimum(r, index / length)
        if ends_inside:
            r = torch.minimum(r, (side - 1 - index) / length)
        return r.clamp(0.0, 1.0)

    return ramp(y0 > 0, y1 < height)[:, None] * ramp(x0 > 0, x1 < width)[None, :]


def _resize_to(patch: torch.Tensor, side: int) -> torch.Tensor:
    """[size, size, C] -> [side, side, C] float32, without the 0..1 clamp (changes can be negative)."""
    if patch.shape[0] == side:
        return patch.float()
    x = patch.permute(2, 0, 1).unsqueeze(0).float()
    x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0)


def color_matched(inpainted: torch.Tensor, crop: torch.Tensor, crop_mask: torch.Tensor) -> torch.Tensor:
    """The inpainted crop with its new pixels recoloured to match the original on a ring around the mask.

    Only changed pixels are recoloured: an untouched pixel already has the original's colour.
    """
    size = crop_mask.shape[-1]
    region = crop_mask > 0.5
    ring = dilate(region, max(2, round(RING_WIDTH * size))) & ~region
    if int(ring.sum()) < MIN_RING_PIXELS:
        return inpainted
    changed = (inpainted != crop).any(dim=-1)
    result = inpainted.clone()
    # Only the changed pixels are converted: Lab round trips cost more than the rest of compositing.
    result[changed] = match_color(inpainted[changed], inpainted[ring], crop[ring]).to(inpainted.dtype)
    return result


def composite(images: torch.Tensor, plan: CropPlan, inpainted: torch.Tensor, crops: torch.Tensor | None = None,
              grow: float = DEFAULT_GROW, feather: float = DEFAULT_FEATHER,
              color_match: bool = False) -> CompositeResult:
    """Blends each inpainted crop [N, size, size, C] back into images [B, H, W, C].

    `crops` are the crops the inpainter was given (`plan.extract(images)`; recomputed when None).
    Regions are applied in plan order; with merged plans no two overlap.
    """
    if inpainted.shape[0] != len(plan):
        raise ValueError(f"{inpainted.shape[0]} inpainted crops for a plan of {len(plan)} regions")
    if crops is None:
        crops = plan.extract(images)
    if inpainted.shape != crops.shape:
        raise ValueError(f"inpainted crops have shape {tuple(inpainted.shape)}, expected {tuple(crops.shape)}")
    batch, height, width = images.shape[:3]
    output = images.clone()
    blend_mask = torch.zeros((batch, height, width), dtype=torch.float32, device=images.device)
    for i, region in enumerate(plan.regions):
        fixed = inpainted[i].to(images.device)
        original_crop = crops[i].to(images.device)
        if color_match:
            fixed = color_matched(fixed.float(), original_crop.float(), plan.crop_masks[i].to(images.device))
        weights = blend_weights(plan.region_masks[i].to(images.device), region.box, height, width, grow, feather)
        _blend_region(output[region.image_index], blend_mask[region.image_index], region.box,
                      fixed.float(), original_crop.float(), weights)
    return CompositeResult(output, blend_mask)


def _blend_region(image: torch.Tensor, blend: torch.Tensor, box, fixed: torch.Tensor, crop: torch.Tensor,
                  weights: torch.Tensor) -> None:
    """Blends one region into `image` [H, W, C] in place and records its weights in `blend` [H, W].

    new = original + w * (change + c * (resized crop - original)), with change = the inpainter's change
    resized to the crop side and c in 0..1 how much the inpainter changed the pixel: c = 1 pastes
    the resized result, c = 0 adds the change to the full-resolution original (exactly nothing when
    the change is zero).
    """
    height, width = image.shape[:2]
    side = weights.shape[0]
    x0, y0, _, _ = box
    cx0, cy0, cx1, cy1 = clip_box(box, height, width)
    inner = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
    difference = fixed - crop
    changed = (difference.abs().amax(dim=-1, keepdim=True) / CHANGE_TOLERANCE).clamp(0.0, 1.0)
    # One resize for all three (the same filter for `change` and `base`, so change + base = resized result).
    channels = difference.shape[-1]
    resized = _resize_to(torch.cat([difference, changed, crop], dim=-1), side)[inner]
    change, gate, base = resized.split([channels, 1, channels], dim=-1)
    gate = gate.clamp(0.0, 1.0)
    w = weights[inner].unsqueeze(-1)
    target = image[cy0:cy1, cx0:cx1]
    original = target.float()
    blended = (original + w * (change + gate * (base - original))).clamp(0.0, 1.0)
    touched = (w > 0) & ((change != 0) | (gate > 0)).any(dim=-1, keepdim=True)
    image[cy0:cy1, cx0:cx1] = torch.where(touched, blended.to(image.dtype), target)
    blend[cy0:cy1, cx0:cx1] = torch.maximum(blend[cy0:cy1, cx0:cx1], weights[inner])
