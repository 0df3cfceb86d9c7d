"""Zoom-in refinement nodes: Connected-Component Crop, Zoom Inpaint, Composite, Auto Fix, Crops to SEGS."""

from __future__ import annotations

import json
from collections import namedtuple

import torch
import torch.nn.functional as F

from pal_core import Detector
from pal_core.composite import DEFAULT_FEATHER, DEFAULT_GROW, composite
from pal_core.crops import DEFAULT_ZOOM, CropPlan, clip_box
from pal_core.inpainters import Inpainter
from pal_core.masks import OFFICIAL_ITERATIONS, binarize
from pal_core.refine import RefineOptions, inpaint_each, plan_regions, refine
from pal_core.verdicts import fix_summary, inpaint_line

from . import comfy_env
from .detection import THRESHOLD

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
PROMPT = ("STRING", {"default": "", "multiline": True, "tooltip": "What the repaired regions should show "
                                                                  "(diffusion inpainters; OpenCV ignores it)."})
SEED = ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                "tooltip": "Region i of an image is inpainted with seed + i."})


def mask_for_images(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The mask as [B, H, W] matching the images: one mask is used for every image, and a mask of
    another size (LoadImage gives 64x64 when an image has no alpha) is resized to the images."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    if mask.dim() != 3:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected [B, H, W]")
    batch, height, width = images.shape[:3]
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"{mask.shape[0]} masks for {batch} images; give one mask, or one per image")
    if tuple(mask.shape[1:]) != (height, width):
        mask = F.interpolate(mask.unsqueeze(1).float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return mask.expand(batch, -1, -1).to(images.device)


class PALConnectedComponentCrop:
    DESCRIPTION = ("Splits an artifact mask into connected regions and cuts a zoomed-in square crop around each "
                   "(the paper's zoom-in): crops and their masks go to any inpainting, the crop plan to Composite.")
    CATEGORY = "PAL"
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
            "multiple": (["8", "16", "64"], {"tooltip": "Round the crop size to this multiple (latent models need 8)."}),
            "merge_overlapping": ("BOOLEAN", {"default": True, "tooltip": "Regions whose crops overlap share one crop."}),
        }}

    def crop(self, images, mask, dilation, zoom, min_area, max_area_ratio, target_size, multiple, merge_overlapping):
        options = RefineOptions(dilate_iterations=dilation, min_area=min_area, max_area_ratio=max_area_ratio, zoom=zoom,
                                resolution=target_size, multiple=int(multiple), merge_overlapping=merge_overlapping)
        plan = plan_regions(binarize(mask_for_images(mask, images), 0.5), options)
        return plan.extract(images), plan.crop_masks.to(images.device), plan


class PALZoomInpaint:
    DESCRIPTION = "Inpaints each zoomed-in crop where its mask is set, one region at a time (cancel between regions)."
    CATEGORY = "PAL"
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
                "inpainter": ("PAL_INPAINTER", {"tooltip": "From Load Inpainter or ComfyUI Model Inpainter."}),
                "prompt": PROMPT,
                "seed": SEED,
            },
            "optional": {"crop_plan": ("PAL_CROPS", {"tooltip": "Gives each region its seed within its own image "
                                                                "(seed + i), so results do not depend on the batch."})},
        }

    def inpaint(self, crops, crop_masks, inpainter: Inpainter, prompt, seed, crop_plan: CropPlan | None = None):
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
        return fixed, summary


class PALComposite:
    DESCRIPTION = ("Blends the inpainted crops back into the images through feathered masks; pixels outside every "
                   "region stay exactly as they were.")
    CATEGORY = "PAL"
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
        if len(crop_plan.image_sizes) != images.shape[0] or any(
                size != tuple(images.shape[1:3]) for size in crop_plan.image_sizes):
            raise ValueError(f"the crop plan was made for {len(crop_plan.image_sizes)} images of size "
                             f"{crop_plan.image_sizes[:1]}, not these {tuple(images.shape)}; connect the same images")
        result = composite(images, crop_plan, inpainted_crops.to(images.device, images.dtype), None,
                           DEFAULT_GROW, feather, color_match)
        return result.images, result.blend_mask.to(comfy_env.output_device())


class PALAutoFix:
    DESCRIPTION = ("Detect, crop, inpaint and composite in one node: finds the artifacts, repaints each region "
                   "zoomed in, and (with re-detect) keeps a region's fix only if it reduced the artifacts there.")
    CATEGORY = "PAL"
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
            "inpainter": ("PAL_INPAINTER", {"tooltip": "From Load Inpainter or ComfyUI Model Inpainter."}),
            "prompt": PROMPT,
            "seed": SEED,
            "threshold": THRESHOLD,
            "zoom": ZOOM,
            "target_size": TARGET_SIZE,
            "feather": FEATHER,
            "color_match": COLOR_MATCH,
            "redetect": ("BOOLEAN", {"default": True, "tooltip": "Check each fix with the detector and undo the "
                                                                 "ones that did not reduce the artifacts."}),
        }}

    def fix(self, images, detector: Detector, inpainter: Inpainter, prompt, seed, threshold, zoom, target_size,
            feather, color_match, redetect):
        options = RefineOptions(threshold=threshold, zoom=zoom, resolution=target_size, feather=feather,
                                color_match=color_match, redetect=redetect)
        with comfy_env.model_on_device(detector.model, detector.device):
            result = refine(images, detector, inpainter, options, prompt, seed,
                            progress=comfy_env.Progress(images.shape[0]))
        reports = result.report()
        summary = fix_summary(reports, threshold, inpainter.name)
        out = comfy_env.output_device()
        return (result.images.to(out), result.mask_before.float().to(out), result.blend_mask.to(out),
                json.dumps([{"model": getattr(detector, "name", None), **image} for image in reports]), summary)


class PALCropsToSEGS:
    DESCRIPTION = ("Turns the crop plan into ComfyUI-Impact-Pack SEGS (one per image), so its detailers can "
                   "repaint our artifact regions.")
    CATEGORY = "PAL"
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
    "PALConnectedComponentCrop": PALConnectedComponentCrop,
    "PALZoomInpaint": PALZoomInpaint,
    "PALComposite": PALComposite,
    "PALAutoFix": PALAutoFix,
    "PALCropsToSEGS": PALCropsToSEGS,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PALConnectedComponentCrop": "Connected-Component Crop (PAL)",
    "PALZoomInpaint": "Zoom Inpaint (PAL)",
    "PALComposite": "Composite (PAL)",
    "PALAutoFix": "Auto Fix Artifacts (PAL)",
    "PALCropsToSEGS": "Crops to SEGS (PAL)",
}
