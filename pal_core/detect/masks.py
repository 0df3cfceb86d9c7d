"""Mask operations for refinement: threshold, dilation, connected components, area filters, PAR.

Masks are torch tensors [B, H, W] (bool or float in 0..1) and stay on their device, except in
`connected_components`, which runs OpenCV's labelling on a CPU copy (torch has no labelling op) and
moves the labels back.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# A pixel is an artifact when its probability is above this: the official model's argmax over its two
# classes. Every threshold default in the library, the command line and the nodes is this one.
DEFAULT_THRESHOLD = 0.5

# PAL4VST's refinement script dilates the 512x512 mask with a 5x5 kernel, 5 times: each pass grows
# the mask by 2 pixels, so 10 pixels in all at 512. Larger images scale this, see `dilation_radius`.
OFFICIAL_KERNEL = 5
OFFICIAL_ITERATIONS = 5
OFFICIAL_SIZE = 512


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """The one rule for an artifact threshold: a probability in [0, 1) (a pixel counts when strictly above)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold < 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1), not {threshold!r}")
    return threshold


def binarize(probability: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """Bool mask: probability above `threshold` (the detector's own convention: strictly above)."""
    check_threshold(threshold)
    if probability.dtype == torch.bool:
        return probability
    return probability > threshold


def par(mask: torch.Tensor) -> torch.Tensor:
    """Perceptual Artifacts Ratio per image: artifact pixels / all pixels, float32 [B] (mask [B, H, W])."""
    if mask.dim() != 3:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected [B, H, W]")
    return (mask.flatten(1) > 0).float().mean(dim=1)


def par_of_probability(probability: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """PAR [B] from probability maps [B, H, W]; NaN for a map holding NaN: an image with non-finite
    pixels, which the detector does not run (see Detector.predict), so it never passes for a clean one."""
    scores = par(binarize(probability, threshold))
    if probability.is_floating_point():
        scores = scores.masked_fill(torch.isnan(probability.flatten(1)).any(dim=1), float("nan"))
    return scores


def dilation_radius(height: int, width: int, kernel: int = OFFICIAL_KERNEL, iterations: int = OFFICIAL_ITERATIONS,
                    reference: int = OFFICIAL_SIZE) -> tuple[int, int]:
    """(radius_y, radius_x) in pixels that match the official dilation on this image.

    The official script dilates at 512x512 and the mask is then stretched back to the image, so the
    growth per axis is the 512-pixel growth scaled by that axis' size / 512 (anisotropic for
    non-square images, exactly as the stretched mask would be).
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel must be an odd size >= 1, not {kernel}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, not {iterations}")
    grow = (kernel // 2) * iterations
    return round(grow * height / reference), round(grow * width / reference)


def dilate(mask: torch.Tensor, radius: int | tuple[int, int]) -> torch.Tensor:
    """Grows a mask [..., H, W] by a square (or rectangular) structuring element of `radius` pixels.

    On the CPU this is OpenCV's dilation (a rectangle is separable there and runs in a few
    milliseconds at 1024x1024, where torch's max pooling takes ~100 ms); on other devices two 1-D
    max filters on torch, so the mask never leaves its device. Both give the same result, in the
    input's dtype and on its device.
    """
    ry, rx = (radius, radius) if isinstance(radius, int) else radius
    if ry < 0 or rx < 0:
        raise ValueError(f"dilation radius must be >= 0, not {radius}")
    if (ry == 0 and rx == 0) or mask.numel() == 0:
        return mask.clone()
    if mask.device.type == "cpu":
        return _dilate_opencv(mask, ry, rx)
    return _dilate_torch(mask, ry, rx)


def _dilate_opencv(mask: torch.Tensor, ry: int, rx: int) -> torch.Tensor:
    shape = mask.shape
    planes = mask.reshape(-1, *shape[-2:])
    as_uint8 = planes.dtype in (torch.bool, torch.uint8)
    array = planes.to(torch.uint8 if as_uint8 else torch.float32).numpy()
    kernel = np.ones((2 * ry + 1, 2 * rx + 1), np.uint8)
    grown = np.stack([cv2.dilate(plane, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) for plane in array])
    return torch.from_numpy(grown).to(mask.dtype).reshape(shape)


def _dilate_torch(mask: torch.Tensor, ry: int, rx: int) -> torch.Tensor:
    """Rows, then columns: a separable square kernel at a cost linear in the radius."""
    shape = mask.shape
    work = mask.reshape(-1, 1, *shape[-2:]).float()
    if rx:
        work = F.max_pool2d(F.pad(work, (rx, rx, 0, 0), value=float("-inf")), (1, 2 * rx + 1), stride=1)
    if ry:
        work = F.max_pool2d(F.pad(work, (0, 0, ry, ry), value=float("-inf")), (2 * ry + 1, 1), stride=1)
    return work.to(mask.dtype).reshape(shape)


def dilate_like_official(mask: torch.Tensor, kernel: int = OFFICIAL_KERNEL,
                         iterations: int = OFFICIAL_ITERATIONS) -> torch.Tensor:
    """The official 5x5 x 5 dilation, scaled to the mask's resolution (mask [B, H, W])."""
    return dilate(mask, dilation_radius(mask.shape[-2], mask.shape[-1], kernel, iterations))


@dataclass(frozen=True)
class Component:
    """One connected region of an image's mask. `box` is (x0, y0, x1, y1), end-exclusive."""

    image_index: int
    label: int  # value of this component in `ComponentLabels.labels[image_index]`
    box: tuple[int, int, int, int]
    area: int


@dataclass
class ComponentLabels:
    """Connected components of a mask batch: a label map per image (0 = background) and the kept parts.

    `skipped[b]` says why image b has no components although its mask is not empty (None when not
    skipped), so callers can report it instead of silently doing nothing.
    """

    labels: torch.Tensor  # int32 [B, H, W], on the mask's device
    components: list[Component]
    skipped: list[str | None]

    def for_image(self, image_index: int) -> list[Component]:
        return [c for c in self.components if c.image_index == image_index]


def connected_components(mask: torch.Tensor, min_area: int = 0, max_area_ratio: float = 1.0,
                         connectivity: int = 8) -> ComponentLabels:
    """Splits each mask of a batch [B, H, W] into connected components (OpenCV, on a CPU copy).

    Components smaller than `min_area` pixels are dropped (label set to 0): detector speckles are not
    worth an inpainting pass. An image whose mask covers more than `max_area_ratio` of it gets no
    components at all: zooming in on "most of the image" is no zoom-in, and such masks usually mean
    the detector failed on this image, so it is left alone and reported.
    """
    if mask.dim() != 3:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected [B, H, W]")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, not {connectivity}")
    if not 0.0 < max_area_ratio <= 1.0:
        raise ValueError(f"max_area_ratio must be in (0, 1], not {max_area_ratio}")
    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, not {min_area}")
    binary = (mask > 0).to("cpu", torch.uint8).numpy()
    labels = np.zeros(binary.shape, dtype=np.int32)
    components: list[Component] = []
    skipped: list[str | None] = []
    for b, image_mask in enumerate(binary):
        ratio = float(image_mask.mean()) if image_mask.size else 0.0
        if ratio > max_area_ratio:
            skipped.append(f"mask covers {ratio:.1%} of the image, more than max_area_ratio={max_area_ratio:.0%}")
            continue
        count, image_labels, stats, _ = cv2.connectedComponentsWithStats(image_mask, connectivity=connectivity,
                                                                         ltype=cv2.CV_32S)
        keep = np.zeros(count, dtype=np.int32)  # old label -> new label (0 = dropped)
        for old in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[old])
            if area < min_area:
                continue
            new = int(keep.max()) + 1
            keep[old] = new
            components.append(Component(b, new, (x, y, x + w, y + h), area))
        labels[b] = keep[image_labels]
        dropped_all = count > 1 and not keep.any()
        skipped.append(f"all {count - 1} regions are smaller than min_area={min_area} px" if dropped_all else None)
    return ComponentLabels(torch.from_numpy(labels).to(mask.device), components, skipped)
