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

from ..detect.detector import ProgressCallback
from ..detect.masks import (DEFAULT_THRESHOLD, OFFICIAL_ITERATIONS, OFFICIAL_KERNEL, binarize, check_threshold,
                            connected_components, dilate_like_official, par)
from .composite import DEFAULT_FEATHER, DEFAULT_GROW, composite
from .crops import (DEFAULT_MIN_SIDE, DEFAULT_MULTIPLE, DEFAULT_RESOLUTION, DEFAULT_ZOOM, CropPlan, clip_box,
                    plan_crops)
from .inpainters.base import Inpainter


class ArtifactDetector(Protocol):
    """What refinement needs from a detector (`pal_core.Detector` is one)."""

    def predict(self, images: torch.Tensor, progress: ProgressCallback | None = None,
                threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
        """Probabilities [B, H, W]; `threshold` is where refinement will cut its masks."""


@dataclass(frozen=True)
class RefineOptions:
    """Every setting of a refinement run; defaults follow the paper and the official script."""

    threshold: float = DEFAULT_THRESHOLD
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
    attempted: torch.Tensor | None = None  # [B, H, W, C] with every fix blended in, kept or not (to show them)

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


def plan_regions(mask: torch.Tensor, options: RefineOptions = RefineOptions(), multiple: int = 1) -> CropPlan:
    """The crop plan for a binary artifact mask [B, H, W]: dilate it (scaled like the official script),
    split it into connected regions, and place one square, zoomed-in crop around each.

    `multiple`: what the inpainter needs the working size to be a multiple of (with `options.multiple`).
    """
    regions_mask = dilate_like_official(mask, options.dilate_kernel, options.dilate_iterations)
    components = connected_components(regions_mask, options.min_area, options.max_area_ratio)
    return plan_crops(components, options.zoom, options.min_side, options.resolution,
                      math.lcm(options.multiple, multiple), options.merge_overlapping)


def refine(images: torch.Tensor, detector: ArtifactDetector, inpainter: Inpainter,
           options: RefineOptions = RefineOptions(), prompts: str | Sequence[str] = "", seed: int = 0,
           progress: ProgressCallback | None = None) -> RefineResult:
    """Finds artifacts in images [B, H, W, 3] and repaints each region through a zoomed-in crop.

    `prompts`: one for all images or one per image. Region i of an image gets seed + i, so an
    image's result does not depend on the other images of its batch. `progress(done, total)` counts
    images detected, regions inpainted and images detected again; the total grows once the regions
    are known. It is called after every region, so a callback that raises (Cancel) stops the work
    between regions.
    """
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images have shape {tuple(images.shape)}; expected [B, H, W, 3]")
    check_finite_images(images)
    image_prompts = _per_image(prompts, images.shape[0])
    work = WorkCounter(progress, images.shape[0])

    mask = binarize(detector.predict(images, progress=work.stage(), threshold=options.threshold), options.threshold)
    plan = plan_regions(mask, options, inpainter.multiple)
    work.grow(len(plan) + (len(_images_of(plan.regions)) if options.redetect else 0))

    crops = plan.extract(images)
    seeds = [seed + r.index_in_image for r in plan.regions]
    fixed = inpaint_each(inpainter, crops, plan.crop_masks.to(crops.dtype),
                         [image_prompts[r.image_index] for r in plan.regions], seeds, work.stage())
    result = composite(images, plan, fixed, crops, options.grow, options.feather, options.color_match)

    reports = [RegionReport(r.image_index, r.index_in_image, r.box, r.component_box, len(r.labels), r.area,
                            plan.scale(i), seeds[i], _artifact_pixels(mask, r.image_index, r.box))
               for i, r in enumerate(plan.regions)]
    if not options.redetect:
        return RefineResult(result.images, result.blend_mask, mask, None, plan, reports, par(mask), None,
                            plan.skipped, attempted=result.images)
    images_after, blend_mask, mask_after = _keep_improvements(images, detector, options, plan, crops, fixed, mask,
                                                              result.images, result.blend_mask, reports, work)
    return RefineResult(images_after, blend_mask, mask, mask_after, plan, reports, par(mask), par(mask_after),
                        plan.skipped, attempted=result.images)


class WorkCounter:
    """Turns the steps of a multi-stage job into one progress(done, total) callback whose total may grow."""

    def __init__(self, callback: ProgressCallback | None, total: int):
        self.callback, self.done, self.total = callback, 0, total

    def grow(self, extra: int) -> None:
        self.total += extra
        self._report()

    def stage(self) -> ProgressCallback:
        """A callback for one stage that counts from where the job stands now (e.g. for `Detector.predict`)."""
        start = self.done

        def report(done: int, total: int) -> None:
            self.done = start + done
            self._report()

        return report

    def _report(self) -> None:
        if self.callback is not None:
            self.callback(self.done, self.total)


def check_finite_images(images: torch.Tensor) -> None:
    """Refuses images with NaN or infinite pixels: the detector cannot run on them (its map is NaN, below
    every threshold), so they would be reported as having no artifact region instead of as broken."""
    finite = torch.isfinite(images.flatten(1)).all(dim=1)
    if not bool(finite.all()):
        broken = [i for i, ok in enumerate(finite.tolist()) if not ok]
        which = "the image has" if len(finite) == 1 else f"image {', '.join(map(str, broken))} of the batch has"
        raise ValueError(f"{which} NaN or infinite pixels, so nothing "
                         "was detected or repainted; such pixels come from a broken decode (e.g. an fp16 VAE: "
                         "decode in fp32 or use a fixed VAE) or a damaged float image file")


def inpaint_each(inpainter: Inpainter, crops: torch.Tensor, masks: torch.Tensor, prompts: list[str],
                 seeds: list[int], progress: ProgressCallback | None = None) -> torch.Tensor:
    """Inpaints crops [N, s, s, 3] one region at a time, calling progress(i + 1, N) after each: a slow
    diffusion fix shows its progress and can be cancelled between regions."""
    if not crops.shape[0]:
        return crops.clone()
    fixed = []
    for i in range(crops.shape[0]):
        fixed.append(inpainter.inpaint(crops[i:i + 1], masks[i:i + 1], prompts[i], seeds[i]))
        if progress is not None:
            progress(i + 1, crops.shape[0])
    return torch.cat(fixed)


def _keep_improvements(images: torch.Tensor, detector: ArtifactDetector, options: RefineOptions, plan: CropPlan,
                       crops: torch.Tensor, fixed: torch.Tensor, mask_before: torch.Tensor, refined: torch.Tensor,
                       blend_mask: torch.Tensor, reports: list[RegionReport], work: WorkCounter
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Detects again and keeps a region's fix only if it reduced the artifact pixels in its crop box.

    Fills in each report's `artifact_px_after` and `kept`; returns the images, blend mask and
    artifact mask after dropping the fixes that did not help. Only changed images are detected
    again: the detector is deterministic, so an unchanged image's mask is the one from before.
    """
    mask = mask_before.clone()
    _detect_again(detector, refined, _images_of(reports), mask, options.threshold, work)
    for report in reports:
        report.artifact_px_after = _artifact_pixels(mask, report.image_index, report.box)
        report.kept = report.artifact_px_after < report.artifact_px_before
    keep = [i for i, report in enumerate(reports) if report.kept]
    if len(keep) == len(reports):
        return refined, blend_mask, mask
    index = torch.tensor(keep, dtype=torch.long, device=fixed.device)
    result = composite(images, plan.subset(keep), fixed.index_select(0, index), crops.index_select(0, index),
                       options.grow, options.feather, options.color_match)
    kept_images = _images_of([reports[i] for i in keep])
    for b in _images_of(reports) - kept_images:  # every fix of the image undone: it is the input again
        mask[b] = mask_before[b]
    # An image that keeps some fixes and drops others is new: the network sees the whole image, so its
    # mask is measured again, not patched together.
    partly_kept = kept_images & _images_of([r for r in reports if not r.kept])
    work.grow(len(partly_kept))
    _detect_again(detector, result.images, partly_kept, mask, options.threshold, work)
    return result.images, result.blend_mask, mask


def _detect_again(detector: ArtifactDetector, images: torch.Tensor, which: set[int], mask: torch.Tensor,
                  threshold: float, work: WorkCounter) -> None:
    """Writes the artifact masks of images[which] into `mask` (in place)."""
    if not which:
        return
    index = torch.tensor(sorted(which), dtype=torch.long, device=images.device)
    found = binarize(detector.predict(images.index_select(0, index), progress=work.stage(), threshold=threshold),
                     threshold)
    mask[index.to(mask.device)] = found.to(mask.device)


def _images_of(regions) -> set[int]:
    return {r.image_index for r in regions}


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
