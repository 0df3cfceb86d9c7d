"""Nodes that load a detector and score images: Load Detector, Detect Artifacts, PAR Score, Rank by PAR."""

from __future__ import annotations

import json

import torch

from pal_core import Detector, available_models, load_detector
from pal_core.imageio import overlay
from pal_core.masks import binarize, par
from pal_core.selection import rank_by_par

from . import comfy_env

DEFAULT_CHOICE = "default"
THRESHOLD = ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01,
                       "tooltip": "Probability above which a pixel counts as an artifact (PAL4VST: 0.5)."})


def detector_choices() -> list[str]:
    """The shipped default, the shipped models by name, and the files in models/pal4vst."""
    return [DEFAULT_CHOICE, *available_models(), *comfy_env.model_files(comfy_env.DETECTOR_FOLDER)]


def predict(detector: Detector, images: torch.Tensor) -> torch.Tensor:
    """The detector's probabilities [B, H, W] on ComfyUI's output device, with its progress bar and Cancel."""
    if images.shape[0] == 0:
        raise ValueError("the image batch is empty; connect a node that outputs at least one image")
    with comfy_env.model_on_device(detector.model, detector.device):
        probability = detector.predict(images, progress=comfy_env.Progress(images.shape[0]))
    return probability.to(comfy_env.output_device())


class PALLoadDetector:
    DESCRIPTION = ("Loads an artifact detector: the shipped default, an official PAL4VST checkpoint "
                   "(TorchScript end2end.pt or mmsegmentation .pth) or a .safetensors from models/pal4vst. "
                   "Loaded once and reused.")
    CATEGORY = "PAL"
    FUNCTION = "load"
    RETURN_TYPES = ("PAL_DETECTOR",)
    RETURN_NAMES = ("detector",)
    OUTPUT_TOOLTIPS = ("The detector, for Detect Artifacts, PAR Score, Rank by PAR and Auto Fix.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (detector_choices(), {"tooltip": "'default' is the small model shipped with the pack; "
                                                      "put official checkpoints in models/pal4vst."}),
            "device": (["auto", "cpu", "cuda"], {"tooltip": "auto: ComfyUI's device (the GPU when there is one)."}),
            "precision": (["fp32", "fp16", "bf16"], {"tooltip": "fp16 needs a GPU; official TorchScript files run in fp32."}),
            "input_size": ("INT", {"default": 512, "min": 0, "max": 4096, "step": 32,
                                   "tooltip": "Square size the network runs at (PAL4VST: 512). 0 runs it at each "
                                              "image's own size (slower, finer masks on large images)."}),
        }}

    def load(self, model: str, device: str, precision: str, input_size: int):
        if model == DEFAULT_CHOICE:
            source = None
        elif model in available_models():
            source = model
        else:
            source = comfy_env.model_path(comfy_env.DETECTOR_FOLDER, model)
        torch_device = comfy_env.torch_device() if device == "auto" else device
        return (load_detector(source, device=torch_device, dtype=precision, input_size=input_size or None),)


class PALDetectArtifacts:
    DESCRIPTION = ("Finds perceptual artifacts in images (PAL4VST): a binary mask, the per-pixel probability, "
                   "an overlay preview with artifacts tinted magenta, and each image's PAR (artifact area / image area).")
    CATEGORY = "PAL"
    FUNCTION = "detect"
    RETURN_TYPES = ("MASK", "MASK", "IMAGE", "FLOAT")
    RETURN_NAMES = ("mask", "probability", "overlay", "par")
    OUTPUT_IS_LIST = (False, False, False, True)
    OUTPUT_TOOLTIPS = ("1 where an artifact was found, 0 elsewhere.", "Artifact probability per pixel, 0..1.",
                       "The images with artifacts tinted magenta.", "PAR per image (a list, one per image).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "detector": ("PAL_DETECTOR", {"tooltip": "From Load Artifact Detector."}),
            "images": ("IMAGE", {"tooltip": "Images to check; any batch size."}),
            "threshold": THRESHOLD,
        }}

    def detect(self, detector: Detector, images: torch.Tensor, threshold: float):
        probability = predict(detector, images)
        mask = binarize(probability, threshold).float()
        return mask, probability, overlay(images.to(mask.device), mask), [round(float(p), 6) for p in par(mask)]


class PALPARScore:
    DESCRIPTION = ("Perceptual Artifacts Ratio (artifact area / image area) per image: from images and a detector, "
                   "or from an artifact mask. Lower is better; 0 means no artifact found.")
    CATEGORY = "PAL"
    FUNCTION = "score"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("par", "report")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_NODE = True  # a score is a result of its own: the node runs even with nothing connected
    OUTPUT_TOOLTIPS = ("PAR per image (a list).", "JSON: index and PAR of each image.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"threshold": THRESHOLD},
            "optional": {
                "images": ("IMAGE", {"tooltip": "Images to score with the detector."}),
                "detector": ("PAL_DETECTOR", {"tooltip": "Needed with images."}),
                "mask": ("MASK", {"tooltip": "Or score an existing artifact mask (pixels above threshold count)."}),
            },
        }

    def score(self, threshold: float, images=None, detector=None, mask=None):
        if mask is not None:
            scores = par(binarize(mask, threshold))
        elif images is not None and detector is not None:
            scores = par(binarize(predict(detector, images), threshold))
        else:
            raise ValueError("PAR Score needs either a mask, or images and a detector: connect one of them")
        scores = [round(float(p), 6) for p in scores]
        report = json.dumps([{"index": i, "par": p} for i, p in enumerate(scores)])
        return {"ui": {"text": [report]}, "result": (scores, report)}


class PALRankByPAR:
    DESCRIPTION = ("Ranks a batch (e.g. one prompt over many seeds) by PAR, best first, and keeps the top k "
                   "and/or those under a PAR limit: pick the seeds with the fewest artifacts.")
    CATEGORY = "PAL"
    FUNCTION = "rank"
    RETURN_TYPES = ("IMAGE", "MASK", "INT", "FLOAT", "STRING")
    RETURN_NAMES = ("images", "masks", "indices", "par", "report")
    OUTPUT_IS_LIST = (False, False, True, True, False)
    OUTPUT_TOOLTIPS = ("The kept images, best first.", "Their artifact masks.",
                       "Their positions in the input batch.", "Their PAR.",
                       "JSON: every image's index, PAR and whether it was kept (or why nothing was).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "detector": ("PAL_DETECTOR", {"tooltip": "From Load Artifact Detector."}),
            "images": ("IMAGE", {"tooltip": "The batch to rank."}),
            "top_k": ("INT", {"default": 1, "min": 0, "max": 4096, "tooltip": "How many to keep; 0 keeps all."}),
            "max_par": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                  "tooltip": "Drop images whose PAR is above this (1.0 drops none)."}),
            "threshold": THRESHOLD,
        }}

    def rank(self, detector: Detector, images: torch.Tensor, top_k: int, max_par: float, threshold: float):
        masks = binarize(predict(detector, images), threshold).float()
        scores = par(masks)
        kept = rank_by_par(scores, top_k, max_par)
        report = {"images": [{"index": i, "par": round(float(p), 6), "kept": i in kept} for i, p in enumerate(scores)]}
        if not kept:
            best = int(scores.argmin())
            report["message"] = (f"no image has PAR <= {max_par} (the best, image {best}, has {float(scores[best]):.4f}); "
                                 "raise max_par to keep some")
            print(f"[PAL] Rank by PAR: {report['message']}")
        index = torch.tensor(kept, dtype=torch.long)
        return (images.index_select(0, index.to(images.device)), masks.index_select(0, index.to(masks.device)),
                kept, [round(float(scores[i]), 6) for i in kept], json.dumps(report))


NODE_CLASS_MAPPINGS = {
    "PALLoadDetector": PALLoadDetector,
    "PALDetectArtifacts": PALDetectArtifacts,
    "PALPARScore": PALPARScore,
    "PALRankByPAR": PALRankByPAR,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PALLoadDetector": "Load Artifact Detector (PAL)",
    "PALDetectArtifacts": "Detect Artifacts (PAL)",
    "PALPARScore": "PAR Score (PAL)",
    "PALRankByPAR": "Rank by PAR (PAL)",
}
