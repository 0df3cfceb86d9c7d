"""Zoom-in refinement, top to bottom: image -> detector -> mask -> crop plan -> inpainter -> composite
-> re-detect.

This is PAL4VST's refinement (dilate the artifact mask, split it into connected components, inpaint
a zoomed-in square crop around each, put it back), plus two checks the paper's script lacks: colour
matching at the seam, and re-detection that keeps a region's fix only if it reduced the artifacts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

import torch

from .composite import DEFAULT_FEATHER, DEFAULT_GROW, composite
from .crops import (DEFAULT_MIN_SIDE, DEFAULT_MULTIPLE, DEFAULT_RESOLUTION, DEFAULT_ZOOM, CropPlan, clip_box,
                    plan_crops)
from .inpainters.base import Inpainter
from .masks import (OFFICIAL_ITERATIONS, OFFICIAL_KERNEL, binarize, check_threshold, connected_components,
                    dilate_like_official, par)


class ArtifactDetector(Protocol):
    """What refinement needs from a detector (`pal_core.Detector` is one)."""

    def predict(self, images: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class RefineOptions:
    """Every setting of a refinement run; defaults follow the paper and the official script."""

    threshold: float = 0.5
    dilate_kernel: int = OFFICIAL_KERNEL  # official: 5x5 kernel, 5 iterations at 512x512, scaled to the image
    dilate_iterations: int = OFFICIAL_ITERATIONS
    min_area: int = 64  # pixels (after dilation); smaller regions are detector speckle
    max_area_ratio: float = 0.5  # an image whose mask covers more than this is left alone and reported
    zoom: float = DEFAULT_ZOOM
    min_side: int = DEFAULT_MIN_SIDE
    resolution: int = DEFAULT_RESOLUTION
    multiple: int = DEFAULT_MULTIPLE
    merge_overlapping: bool = True
    grow: float = DEFAULT_GROW
    feather: float = DEFAULT_FEATHER
    color_match: bool = False
    redetect: bool = True

    def __post_init__(self):
        """Every setting is checked here, once; callers (CLI, nodes) pass values through."""
        check_threshold(self.threshold)
        problems = []
        if self.dilate_kernel < 1 or self.dilate_kernel % 2 == 0:
            problems.append(f"dilate_kernel must be an odd size >= 1, not {self.dilate_kernel}")
        if self.dilate_iterations < 0:
            problems.append(f"dilate_iterations must be >= 0, not {self.dilate_iterations}")
        if self.min_area < 0:
            problems.append(f"min_area must be >= 0, not {self.min_area}")
        if not 0.0 < self.max_area_ratio <= 1.0:
            problems.append(f"max_area_ratio must be in (0, 1], not {self.max_area_ratio}")
        if self.zoom < 1.0:
            problems.append(f"zoom must be >= 1 (the crop must contain the region), not {self.zoom}")
        if self.resolution < 8:
            problems.append(f"resolution must be >= 8, not {self.resolution}")
        if self.min_side < 1 or self.multiple < 1:
            problems.append(f"min_side and multiple must be >= 1, not {self.min_side} and {self.multiple}")
        if self.grow < 0 or self.feather < 0:
            problems.append(f"grow and feather must be >= 0, not {self.grow} and {self.feather}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class RegionReport:
    """One region's fix: where it was and (with re-detection) whether it reduced the artifacts."""

    image_index: int
    region: int
    box: tuple[int, int, int, int]  # the square crop (x0, y0, x1, y1), may extend past the image
    component_box: tuple[int, int, int, int]
    components: int
    area: int  # mask pixels (dilated) the crop repaints
    scale: float  # working size / crop side
    seed: int
    artifact_px_before: int  # detected artifact pixels inside the crop box, before the fix
    artifact_px_after: int | None = None  # the same after the fix (None without re-detection)
    kept: bool = True


@dataclass
class RefineResult:
    images: torch.Tensor  # [B, H, W, C], refined
    blend_mask: torch.Tensor  # float [B, H, W]: where kept fixes were blended in
    mask_before: torch.Tensor  # bool [B, H, W], the detector's mask (undilated)
    mask_after: torch.Tensor | None  # bool [B, H, W] on the result (None without re-detection)
    plan: CropPlan
    regions: list[RegionReport]
    par_before: torch.Tensor  # float [B]
    par_after: torch.Tensor | None
    skipped: list[str | None] = field(default_factory=list)  # per image: why it was left alone

    def report(self) -> list[dict]:
        """One JSON-ready dict per image: PAR before/after, skip reason, and its regions."""
        images = []
        for b in range(self.images.shape[0]):
            images.append({
                "par_before": round(float(self.par_before[b]), 6),
                "par_after": None if self.par_after is None else round(float(self.par_after[b]), 6),
                "skipped": self.skipped[b] if b < len(self.skipped) else None,
                "regions": [_region_dict(r) for r in self.regions if r.image_index == b],
            })
        return images


def _region_dict(region: RegionReport) -> dict:
    values = asdict(region)
    values.pop("image_index")
    values["box"], values["component_box"] = list(region.box), list(region.component_box)
    values["scale"] = round(region.scale, 4)
    return values


def refine(images: torch.Tensor, detector: ArtifactDetector, inpainter: Inpainter,
           options: RefineOptions = RefineOptions(), prompts: str | Sequence[str] = "", seed: int = 0) -> RefineResult:
    """Finds artifacts in images [B, H, W, 3] and repaints each region through a zoomed-in crop.

    `prompts`: one for all images or one per image. Region i of an image gets seed + i, so an
    image's result does not depend on the other images of its batch.
    """
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images have shape {tuple(images.shape)}; expected [B, H, W, 3]")
    image_prompts = _per_image(prompts, images.shape[0])

    mask = binarize(detector.predict(images), options.threshold)
    regions_mask = dilate_like_official(mask, options.dilate_kernel, options.dilate_iterations)
    components = connected_components(regions_mask, options.min_area, options.max_area_ratio)
    plan = plan_crops(components, options.zoom, options.min_side, options.resolution,
                      math.lcm(options.multiple, inpainter.multiple), options.merge_overlapping)

    crops = plan.extract(images)
    seeds = [seed + r.index_in_image for r in plan.regions]
    fixed = inpainter.inpaint(crops, plan.crop_masks.to(crops.dtype), [image_prompts[r.image_index] for r in plan.regions],
                              seeds)
    result = composite(images, plan, fixed, crops, options.grow, options.feather, options.color_match)

    reports = [RegionReport(r.image_index, r.index_in_image, r.box, r.component_box, len(r.labels), r.area,
                            plan.scale(i), seeds[i], _artifact_pixels(mask, r.image_index, r.box))
               for i, r in enumerate(plan.regions)]
    if not options.redetect:
        return RefineResult(result.images, result.blend_mask, mask, None, plan, reports, par(mask), None,
                            plan.skipped)
    images_after, blend_mask, mask_after = _keep_improvements(images, detector, options, plan, crops, fixed, mask,
                                                              result.images, result.blend_mask, reports)
    return RefineResult(images_after, blend_mask, mask, mask_after, plan, reports, par(mask), par(mask_after),
                        plan.skipped)


def _keep_improvements(images: torch.Tensor, detector: ArtifactDetector, options: RefineOptions, plan: CropPlan,
                       crops: torch.Tensor, fixed: torch.Tensor, mask_before: torch.Tensor, refined: torch.Tensor,
                       blend_mask: torch.Tensor, reports: list[RegionReport]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detects again and keeps a region's fix only if it reduced the artifact pixels in its crop box.

    Fills in each report's `artifact_px_after` and `kept`; returns the images, blend mask and
    artifact mask after dropping the fixes that did not help. Unchanged images are not detected
    again: the detector is deterministic, so their mask is the one from before.
    """
    if not len(plan):
        return refined, blend_mask, mask_before
    mask = binarize(detector.predict(refined), options.threshold)
    for report in reports:
        report.artifact_px_after = _artifact_pixels(mask, report.image_index, report.box)
        report.kept = report.artifact_px_after < report.artifact_px_before
    keep = [i for i, report in enumerate(reports) if report.kept]
    if len(keep) == len(reports):
        return refined, blend_mask, mask
    if not keep:
        return images.clone(), torch.zeros_like(blend_mask), mask_before
    index = torch.tensor(keep, dtype=torch.long, device=fixed.device)
    result = composite(images, plan.subset(keep), fixed.index_select(0, index), crops.index_select(0, index),
                       options.grow, options.feather, options.color_match)
    # The network sees the whole image, so the final mask is measured again, not patched together.
    mask = binarize(detector.predict(result.images), options.threshold)
    return result.images, result.blend_mask, mask


def _artifact_pixels(mask: torch.Tensor, image_index: int, box: tuple[int, int, int, int]) -> int:
    height, width = mask.shape[-2:]
    x0, y0, x1, y1 = clip_box(box, height, width)
    return int(mask[image_index, y0:y1, x0:x1].sum())


def _per_image(prompts: str | Sequence[str], count: int) -> list[str]:
    if isinstance(prompts, str):
        return [prompts] * count
    prompts = list(prompts)
    if len(prompts) != count:
        raise ValueError(f"got {len(prompts)} prompts for {count} images; give one, or one per image")
    return prompts
