"""Zoom-in refinement nodes: Connected-Component Crop, Zoom Inpaint, Composite, Auto Fix, Crops to SEGS.

Zoom Inpaint and Auto Fix had a prompt box of their own, which only one kind of inpainter read; the
prompt now belongs to that inpainter's loader. Their first versions stay registered (deprecated) under
their old ids, so saved workflows keep loading with their values in place.
"""

from __future__ import annotations

import json
from collections import namedtuple

import torch
import torch.nn.functional as F

from pal_core import Detector
from pal_core.detect.masks import OFFICIAL_ITERATIONS, binarize
from pal_core.layouts import check_images, check_mask
from pal_core.refinement.composite import DEFAULT_FEATHER, DEFAULT_GROW, composite
from pal_core.refinement.crops import DEFAULT_RESOLUTION, DEFAULT_ZOOM, CropPlan, clip_box
from pal_core.refinement.inpainters import Inpainter
from pal_core.refinement.refine import RefineOptions, inpaint_each, plan_regions, refine
from pal_core.verdicts import fix_summary, inpaint_line

from . import comfy_env
from .detection import THRESHOLD
from .display import shown

FIX_CATEGORY = "PAL/fix"
DEPRECATED_CATEGORY = "PAL/deprecated"

# ComfyUI-Impact-Pack's segment record; its detailers read these fields by name.
SEG = namedtuple("SEG", ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label",
                         "control_net_wrapper"], defaults=[None])

ZOOM = ("FLOAT", {"default": DEFAULT_ZOOM, "min": 1.0, "max": 4.0, "step": 0.05,
                  "tooltip": "Crop side = zoom x the region's longest side (the paper: 1.5). More zoom, more context."})
TARGET_SIZE = ("INT", {"default": 512, "min": 64, "max": 2048, "step": 8,
                       "tooltip": "Every crop is resized to this square size for inpainting (SD 1.x: 512, SDXL: 1024)."})
FEATHER = ("FLOAT", {"default": DEFAULT_FEATHER, "min": 0.0, "max": 0.5, "step": 0.01,
                     "tooltip": "Width of the soft edge where a fix fades into the original, as a fraction of the crop."})
COLOR_MATCH = ("BOOLEAN", {"default": False, "tooltip": "Match the fix's colour (mean and spread in Lab) to a ring "
                                                        "of original pixels around it: hides seams from colour drift."})
AUTO_TARGET_SIZE = ("INT", {"default": 0, "min": 0, "max": 2048, "step": 8,
                            "tooltip": "Square size every crop is inpainted at. 0: the inpainter's own (SD 1.x: 512, "
                                       "SDXL: 1024, OpenCV: 512)."})
PROMPT = ("STRING", {"default": "", "multiline": True, "tooltip": "What the repaired regions should show "
                                                                  "(diffusion inpainters; OpenCV ignores it)."})
REDETECT = ("BOOLEAN", {"default": True, "tooltip": "Check each fix with the detector and undo the ones that "
                                                      "did not reduce the artifacts."})
SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                "tooltip": "Region i of an image is inpainted with seed + i."})


def mask_for_images(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The mask as [B, H, W] matching the images: one mask is used for every image, and a mask of
    another size (LoadImage gives 64x64 when an image has no alpha) is resized to the images."""
    mask = check_mask(mask)
    batch, height, width = check_images(images).shape[:3]
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"{mask.shape[0]} masks for {batch} images; give one mask, or one per image")
    if tuple(mask.shape[1:]) != (height, width):
        mask = F.interpolate(mask.unsqueeze(1).float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return mask.expand(batch, -1, -1).to(images.device)


class PALConnectedComponentCrop:
    DESCRIPTION = ("Splits an artifact mask into connected regions and cuts a zoomed-in square crop around each "
                   "(the paper's zoom-in): crops and their masks go to any inpainting, the crop plan to Composite.")
    CATEGORY = FIX_CATEGORY
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", "MASK", "PAL_CROPS")
    RETURN_NAMES = ("crops", "crop_masks", "crop_plan")
    OUTPUT_TOOLTIPS = ("One square crop per region, all target_size x target_size (empty when nothing was found).",
                       "The region's mask in each crop: where to inpaint.",
                       "Where each crop came from: connect to Composite or Crops to SEGS.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images to fix (any batch size)."}),
            "mask": ("MASK", {"tooltip": "Artifact mask, e.g. Detect Artifacts' mask; resized to the images if needed."}),
            "dilation": ("INT", {"default": OFFICIAL_ITERATIONS, "min": 0, "max": 50,
                                 "tooltip": "Grow the mask first: iterations of a 5x5 kernel at 512 px, scaled with "
                                            "the image (the official script: 5). 0 keeps the mask as it is."}),
            "zoom": ZOOM,
            "min_area": ("INT", {"default": 64, "min": 0, "max": 1_000_000,
                                 "tooltip": "Regions smaller than this many pixels are ignored (speckle)."}),
            "max_area_ratio": ("FLOAT", {"default": 0.5, "min": 0.01, "max": 1.0, "step": 0.01,
                                         "tooltip": "An image whose mask covers more than this share is left alone."}),
            "target_size": TARGET_SIZE,
            "multiple": (["8", "16", "64"], {"default": "8", "tooltip": "Round the crop size to this multiple "
                                                                        "(latent models need 8)."}),
            "merge_overlapping": ("BOOLEAN", {"default": True, "tooltip": "Regions whose crops overlap share one crop."}),
        }}

    def crop(self, images, mask, dilation, zoom, min_area, max_area_ratio, target_size, multiple, merge_overlapping):
        options = RefineOptions(dilate_iterations=dilation, min_area=min_area, max_area_ratio=max_area_ratio, zoom=zoom,
                                resolution=target_size, multiple=int(multiple), merge_overlapping=merge_overlapping)
        plan = plan_regions(binarize(mask_for_images(mask, images), 0.5), options)
        return plan.extract(images), plan.crop_masks.to(images.device), plan


def inpaint_crops(crops, crop_masks, inpainter: Inpainter, prompt: str, seed: int, crop_plan: CropPlan | None) -> dict:
    """Each crop inpainted on its own (progress and cancel between regions); region i of an image gets seed + i.
    The summary (a line per region) is also shown on the node."""
    check_images(crops, "crops", allow_empty=True)
    check_mask(crop_masks, "crop_masks")
    if crop_masks.shape != crops.shape[:3]:
        raise ValueError(f"crop_masks have shape {tuple(crop_masks.shape)} but crops {tuple(crops.shape)}; "
                         "connect both from the same Connected-Component Crop")
    if crop_plan is not None and len(crop_plan) != crops.shape[0]:
        raise ValueError(f"the crop plan has {len(crop_plan)} regions but {crops.shape[0]} crops came in")
    seeds = ([seed + r.index_in_image for r in crop_plan.regions] if crop_plan is not None
             else [seed + i for i in range(crops.shape[0])])
    fixed = inpaint_each(inpainter, crops, crop_masks, [prompt] * crops.shape[0], seeds,
                         comfy_env.Progress(crops.shape[0]))
    summary = "\n".join(inpaint_line(i, crops[i], fixed[i], crop_masks[i], seeds[i],
                                     crop_plan.regions[i] if crop_plan is not None else None)
                        for i in range(crops.shape[0])) or "no regions: nothing to inpaint"
    return shown((fixed, summary), [summary])


class PALZoomInpaintV2:
    DESCRIPTION = ("Inpaints each zoomed-in crop where its mask is set, one region at a time (progress and cancel "
                   "between regions), and shows a line per region on the node. What to paint belongs to the "
                   "inpainter: a diffusers model's prompt is set on its loader, your checkpoint's on ComfyUI Model "
                   "Inpainter.")
    CATEGORY = FIX_CATEGORY
    FUNCTION = "inpaint"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("inpainted_crops", "summary")
    OUTPUT_TOOLTIPS = ("The crops with their masked pixels repainted; connect to Composite.",
                       "One line per region: where it is, how much was repainted and how much it changed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "crops": ("IMAGE", {"tooltip": "From Connected-Component Crop."}),
                "crop_masks": ("MASK", {"tooltip": "From Connected-Component Crop."}),
                "inpainter": ("PAL_INPAINTER", {"tooltip": "From an inpainter loader or ComfyUI Model Inpainter."}),
                "seed": SEED,
            },
            "optional": {"crop_plan": ("PAL_CROPS", {"tooltip": "Gives each region its seed within its own image "
                                                                "(seed + i), so results do not depend on the batch."})},
        }

    def inpaint(self, crops, crop_masks, inpainter: Inpainter, seed, crop_plan: CropPlan | None = None):
        return inpaint_crops(crops, crop_masks, inpainter, "", seed, crop_plan)


class PALZoomInpaint(PALZoomInpaintV2):
    DESCRIPTION = "Deprecated: use Zoom Inpaint (prompts are now set on the inpainter). Kept so saved workflows load."
    DEPRECATED = True
    CATEGORY = DEPRECATED_CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        inputs = super().INPUT_TYPES()
        required = inputs["required"]
        return {"required": {"crops": required["crops"], "crop_masks": required["crop_masks"],
                             "inpainter": required["inpainter"], "prompt": PROMPT, "seed": SEED},
                "optional": inputs["optional"]}

    def inpaint(self, crops, crop_masks, inpainter: Inpainter, prompt, seed, crop_plan: CropPlan | None = None):
        return inpaint_crops(crops, crop_masks, inpainter, prompt, seed, crop_plan)


class PALComposite:
    DESCRIPTION = ("Blends the inpainted crops back into the images through feathered masks; pixels outside every "
                   "region stay exactly as they were.")
    CATEGORY = FIX_CATEGORY
    FUNCTION = "composite"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "blend_mask")
    OUTPUT_TOOLTIPS = ("The fixed images.", "How much of the fix each pixel took (0 = original).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The same images that went into Connected-Component Crop."}),
            "inpainted_crops": ("IMAGE", {"tooltip": "Zoom Inpaint's output (or any node's, same size and order)."}),
            "crop_plan": ("PAL_CROPS", {"tooltip": "From Connected-Component Crop."}),
            "feather": FEATHER,
            "color_match": COLOR_MATCH,
        }}

    def composite(self, images, inpainted_crops, crop_plan: CropPlan, feather, color_match):
        check_images(images)
        check_images(inpainted_crops, "inpainted_crops", allow_empty=True)
        if len(crop_plan.image_sizes) != images.shape[0] or any(
                size != tuple(images.shape[1:3]) for size in crop_plan.image_sizes):
            raise ValueError(f"the crop plan was made for {len(crop_plan.image_sizes)} images of size "
                             f"{crop_plan.image_sizes[:1]}, not these {tuple(images.shape)}; connect the same images")
        result = composite(images, crop_plan, inpainted_crops.to(images.device, images.dtype), None,
                           DEFAULT_GROW, feather, color_match)
        return result.images, result.blend_mask.to(comfy_env.output_device())


def auto_fix(images, detector: Detector, inpainter: Inpainter, prompt: str, seed: int, threshold: float, zoom: float,
             target_size: int, feather: float, color_match: bool, redetect: bool) -> dict:
    """Refinement in one call; its summary (PAR before -> after per image) is shown on the node.
    target_size 0: the inpainter's own size."""
    check_images(images)
    resolution = target_size or inpainter.resolution or DEFAULT_RESOLUTION
    options = RefineOptions(threshold=threshold, zoom=zoom, resolution=resolution, feather=feather,
                            color_match=color_match, redetect=redetect)
    with comfy_env.detector_on_device(detector):
        result = refine(images, detector, inpainter, options, prompt, seed, progress=comfy_env.Progress(images.shape[0]))
    reports = result.report()
    summary = fix_summary(reports, threshold, inpainter.name, getattr(detector, "name", ""))
    out = comfy_env.output_device()
    after = result.par_after if result.par_after is not None else result.par_before
    return shown((result.images.to(out), result.mask_before.float().to(out), result.blend_mask.to(out),
                  json.dumps([{"model": getattr(detector, "name", None), **image} for image in reports]), summary),
                 [summary], [round(float(p), 6) for p in after])


class PALAutoFixV2:
    DESCRIPTION = ("Detect, crop, inpaint and composite in one node: finds the artifacts, repaints each region "
                   "zoomed in, and (with re-detect) keeps a region's fix only if it reduced the artifacts there. "
                   "The progress bar moves per image detected and per region inpainted; Cancel stops between "
                   "regions. After a run the node shows PAR before -> after and each region's verdict.")
    CATEGORY = FIX_CATEGORY
    FUNCTION = "fix"
    RETURN_TYPES = ("IMAGE", "MASK", "MASK", "STRING", "STRING")
    RETURN_NAMES = ("images", "artifact_mask", "blend_mask", "report", "summary")
    OUTPUT_TOOLTIPS = ("The fixed images.", "Artifacts found before the fix.", "Where fixes were blended in.",
                       "JSON per image: the model, PAR before and after and every region.",
                       "One line per image: PAR before -> after, each region kept or rejected (artifact pixels "
                       "before -> after), and what to try when nothing was fixed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images to fix."}),
            "detector": ("PAL_DETECTOR", {"tooltip": "From Load Artifact Detector."}),
            "inpainter": ("PAL_INPAINTER", {"tooltip": "From an inpainter loader or ComfyUI Model Inpainter (the "
                                                       "prompt is set there)."}),
            "seed": SEED,
            "threshold": THRESHOLD,
            "zoom": ZOOM,
            "target_size": AUTO_TARGET_SIZE,
            "feather": FEATHER,
            "color_match": COLOR_MATCH,
            "redetect": REDETECT,
        }}

    def fix(self, images, detector: Detector, inpainter: Inpainter, seed, threshold, zoom, target_size, feather,
            color_match, redetect):
        return auto_fix(images, detector, inpainter, "", seed, threshold, zoom, target_size, feather, color_match,
                        redetect)


class PALAutoFix(PALAutoFixV2):
    DESCRIPTION = ("Deprecated: use Auto Fix Artifacts (prompts are now set on the inpainter, and the crop size "
                   "follows the model). Kept so saved workflows load.")
    DEPRECATED = True
    CATEGORY = DEPRECATED_CATEGORY

    @classmethod
    def INPUT_TYPES(cls):
        new = super().INPUT_TYPES()["required"]
        return {"required": {"images": new["images"], "detector": new["detector"], "inpainter": new["inpainter"],
                             "prompt": PROMPT, "seed": SEED, "threshold": THRESHOLD, "zoom": ZOOM,
                             "target_size": TARGET_SIZE, "feather": FEATHER, "color_match": COLOR_MATCH,
                             "redetect": REDETECT}}

    def fix(self, images, detector: Detector, inpainter: Inpainter, prompt, seed, threshold, zoom, target_size,
            feather, color_match, redetect):
        return auto_fix(images, detector, inpainter, prompt, seed, threshold, zoom, target_size, feather, color_match,
                        redetect)


class PALCropsToSEGS:
    DESCRIPTION = ("Turns the crop plan into ComfyUI-Impact-Pack SEGS (one per image), so its detailers can "
                   "repaint our artifact regions.")
    CATEGORY = FIX_CATEGORY
    FUNCTION = "to_segs"
    RETURN_TYPES = ("SEGS",)
    RETURN_NAMES = ("segs",)
    OUTPUT_IS_LIST = (True,)
    OUTPUT_TOOLTIPS = ("((height, width), [SEG, ...]) per image of the batch.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The images the crop plan was made for."}),
            "crop_plan": ("PAL_CROPS", {"tooltip": "From Connected-Component Crop."}),
        }}

    def to_segs(self, images, crop_plan: CropPlan):
        check_images(images)
        segs = []
        for image_index, (height, width) in enumerate(crop_plan.image_sizes):
            items = []
            for i in crop_plan.regions_of(image_index):
                region = crop_plan.regions[i]
                x0, y0, x1, y1 = clip_box(region.box, height, width)  # Impact crops inside the image
                bx0, by0 = region.box[0], region.box[1]
                mask = crop_plan.region_masks[i][y0 - by0:y1 - by0, x0 - bx0:x1 - bx0]
                items.append(SEG(
                    cropped_image=images[image_index:image_index + 1, y0:y1, x0:x1, :].clone(),
                    cropped_mask=mask.float().cpu().numpy(),
                    confidence=1.0,
                    crop_region=[x0, y0, x1, y1],
                    bbox=list(region.component_box),
                    label="artifact",
                ))
            segs.append(((height, width), items))
        return (segs,)


NODE_CLASS_MAPPINGS = {
    "PALAutoFixV2": PALAutoFixV2,
    "PALConnectedComponentCrop": PALConnectedComponentCrop,
    "PALZoomInpaintV2": PALZoomInpaintV2,
    "PALComposite": PALComposite,
    "PALCropsToSEGS": PALCropsToSEGS,
    "PALAutoFix": PALAutoFix,
    "PALZoomInpaint": PALZoomInpaint,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PALAutoFixV2": "Auto Fix Artifacts (PAL)",
    "PALConnectedComponentCrop": "Connected-Component Crop (PAL)",
    "PALZoomInpaintV2": "Zoom Inpaint (PAL)",
    "PALComposite": "Composite (PAL)",
    "PALCropsToSEGS": "Crops to SEGS (PAL)",
    "PALAutoFix": "Auto Fix Artifacts (PAL, old)",
    "PALZoomInpaint": "Zoom Inpaint (PAL, old)",
}
