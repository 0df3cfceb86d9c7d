"""Nodes that load a detector and score images: Load Detector, Detect Artifacts, PAR Score, Rank by PAR."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pal_core import Detector, load_detector
from pal_core.detect.devices import PRECISIONS
from pal_core.detect.masks import DEFAULT_THRESHOLD, binarize, par_of_probability
from pal_core.hub import catalogue
from pal_core.hub.loading import MODEL_INPUT_SIZE, ModelNotFoundError, default_model_notice, locate_model
from pal_core.imageio import overlay
from pal_core.layouts import check_images, check_mask
from pal_core.rank.selection import NOT_FINITE, rank_by_par

from . import comfy_env
from .display import par_lines, precision_lines, rank_lines, shown

DEFAULT_CHOICE = "default"
MODEL_SIZE = -1  # input_size widget: the size saved in the model file (older saved workflows hold 512: kept)
NOT_INSTALLED = " (not installed)"
MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
DETECT_CATEGORY = "PAL/detect"
RANK_CATEGORY = "PAL/rank"
DEVICE = (["auto", "cpu", "cuda"], {"default": "auto", "tooltip": "auto: ComfyUI's device (the GPU when there is one)."})
THRESHOLD = ("FLOAT", {"default": DEFAULT_THRESHOLD, "min": 0.0, "max": 0.99, "step": 0.01,
                       "tooltip": "Probability above which a pixel counts as an artifact (PAL4VST: 0.5)."})


def detector_choices() -> list[str]:
    """'default', the installed catalogue models, the missing ones marked, then the other files in
    models/pal4vst (checksum records and partial downloads left out)."""
    installed, missing = [], []
    for entry in catalogue.entries():
        (installed if locate_model(entry.name) else missing).append(entry.name)
    catalogue_files = {entry.file_name for entry in catalogue.entries()}
    files = [f for f in comfy_env.model_files(comfy_env.DETECTOR_FOLDER)
             if f.endswith(MODEL_SUFFIXES) and not Path(f).name.startswith(".") and f not in catalogue_files]
    return [DEFAULT_CHOICE, *installed, *(name + NOT_INSTALLED for name in missing), *files]


def _catalogue_tooltip() -> str:
    lines = [f"{entry.name}: {entry.purpose}." for entry in catalogue.entries()]
    return ("Which detector. 'default': pal4vst-unified when installed, else the small shipped pal-lite. "
            + " ".join(lines) + " Models marked (not installed) are the authors' files: get one with "
            "`pal download NAME` or the download_if_missing switch. Other files in models/pal4vst "
            "(.safetensors, mmseg .pth, TorchScript .pt) are listed by name.")


def predict(detector: Detector, images: torch.Tensor, threshold: float) -> torch.Tensor:
    """The detector's probabilities [B, H, W] on ComfyUI's output device, with its progress bar and Cancel;
    `threshold` is where the caller cuts masks (below fp32, precision auto keeps them fp32's there)."""
    check_images(images)
    with comfy_env.detector_on_device(detector):
        probability = detector.predict(images, progress=comfy_env.Progress(images.shape[0]), threshold=threshold)
    return probability.to(comfy_env.output_device())


def by_hand_in_comfyui(name: str) -> str:
    """How a ComfyUI user installs a catalogue model without the `pal` command."""
    entry = catalogue.get(name)
    folders = comfy_env.model_folders(comfy_env.DETECTOR_FOLDER)
    where = folders[0] if folders else f"ComfyUI's models/{comfy_env.DETECTOR_FOLDER}"
    return (f"open {entry.page} in a browser, save the file in {where} and choose it by its file name in this "
            "node's model list")


def download(name: str) -> None:
    """Fetches a catalogue model into models/pal4vst, with ComfyUI's progress bar; says in the console
    what happens after the transfer (the conversion of a 1.5 GB file takes a while)."""
    from pal_core.hub.download import download_model  # the network, only when switched on

    bar = comfy_env.Progress(1)  # the size is known once the transfer starts
    download_model(name, show_progress=False, progress=lambda done, total: bar(done, total or done + 1),
                   say=lambda line: print(f"[PAL] {name}: {line}", flush=True), by_hand=by_hand_in_comfyui(name))


class PALLoadDetector:
    DESCRIPTION = ("Loads an artifact detector: the official PAL4VST models by name (pal4vst-unified is the one "
                   "to use; download it once), the small shipped pal-lite, or any detector file in models/pal4vst "
                   "(.safetensors, mmseg .pth, TorchScript end2end.pt). Loaded once and reused. .safetensors and "
                   ".pth files are data; a TorchScript file is a program: only its weights are read, and it never "
                   "runs unless you allow it.")
    CATEGORY = DETECT_CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("PAL_DETECTOR", "STRING")
    RETURN_NAMES = ("detector", "model_info")
    OUTPUT_TOOLTIPS = ("The detector, for Detect Artifacts, PAR Score, Rank by PAR and Auto Fix.",
                       "Which model was loaded and from where; says so when the default fell back to pal-lite "
                       "(also shown on the node).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (detector_choices(), {"default": DEFAULT_CHOICE, "tooltip": _catalogue_tooltip()}),
            "device": DEVICE,
            "precision": (list(PRECISIONS), {"default": "auto", "tooltip": (
                "auto: the fastest precision this device runs natively (bf16 on CPUs with AMX/AVX512-BF16 and on "
                "recent GPUs, fp16 on older GPUs, else fp32), keeping fp32's masks: an image undecided at the "
                "threshold is run again in fp32, and when that keeps happening the images run in fp32 directly, so auto "
                "is never much slower than fp32. bf16/fp16: raw speed, unchecked. fp32 for exact results. fp16 "
                "needs a GPU; a TorchScript file run as a program stays fp32.")}),
            "input_size": ("INT", {"default": MODEL_SIZE, "min": MODEL_SIZE, "max": 4096, "step": 32,
                                   "tooltip": "Square size the network runs at. -1: the size saved in the model "
                                              "file (PAL4VST and pal-lite: 512; a distilled student: its own). 0: "
                                              "each image's own size (slower, finer masks on large images)."}),
        }, "optional": {
            # Inputs added after the first release are optional and come after every older widget: files saved
            # before them keep their values' positions and get the old behaviour (docs/compatibility.md).
            "download_if_missing": ("BOOLEAN", {
                "default": False,
                "tooltip": "Download a catalogue model that is not installed yet from its authors' link (0.5 to "
                           "1.5 GB, into models/pal4vst, with a progress bar; then converted, which takes a minute). "
                           "Off: a missing model is an error that says how to get it. Nothing is ever downloaded unless this is on."}),
            "allow_torchscript": ("BOOLEAN", {"default": False, "tooltip": (
                "A TorchScript file (.pt) is a program, not data: running it runs code that can read and write "
                "your files. Off: only its weights are read (the official end2end.pt works this way). On: a "
                "TorchScript file whose weights cannot be read is run as a program. Only for files you trust.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        """A saved choice stays valid when its model is installed later (the '(not installed)' mark goes)."""
        name = model.removesuffix(NOT_INSTALLED)
        if model in detector_choices() or name in catalogue.names() or name + NOT_INSTALLED in detector_choices():
            return True
        return f"'{model}' is neither a catalogue model nor a file in models/pal4vst"

    def load(self, model: str, device: str, precision: str, input_size: int, download_if_missing: bool = False,
             allow_torchscript: bool = False):
        name = model.removesuffix(NOT_INSTALLED)
        notice = None
        if model == DEFAULT_CHOICE:
            source, notice = None, default_model_notice()
        elif name in catalogue.names():
            if download_if_missing and locate_model(name) is None:
                download(name)
            elif locate_model(name) is None and not catalogue.get(name).shipped:
                raise ModelNotFoundError(f"{name} is not installed: turn on download_if_missing in this node to "
                                         f"download it once, or {by_hand_in_comfyui(name)}")
            source = name
        else:
            source = comfy_env.model_path(comfy_env.DETECTOR_FOLDER, model)
        torch_device = comfy_env.torch_device() if device == "auto" else device
        size = MODEL_INPUT_SIZE if input_size == MODEL_SIZE else input_size or None
        detector = load_detector(source, device=torch_device, dtype=precision, input_size=size,
                                 trust_code=allow_torchscript)
        guard = ", fp32 where the guard finds the mask undecided" if detector.guarded else ""
        lines = [f"{detector.name} ({detector.info.format}, {detector.precision} on {detector.device}{guard}) "
                 f"from {detector.info.source}", *([notice] if notice else [])]
        return shown((detector, "\n".join(lines)), lines)


class PALDetectArtifacts:
    DESCRIPTION = ("Finds perceptual artifacts in images (PAL4VST): a binary mask, the per-pixel probability, "
                   "an overlay preview with artifacts tinted magenta, and each image's PAR (artifact area / image area), "
                   "which the node also shows after a run.")
    CATEGORY = DETECT_CATEGORY
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
        probability = predict(detector, images, threshold)
        mask = binarize(probability, threshold).float()
        scores = [round(float(p), 6) for p in par_of_probability(probability, threshold)]
        lines = par_lines(scores) + precision_lines(detector.last_precisions, detector.guarded)
        return shown((mask, probability, overlay(images.to(mask.device), mask), scores), lines, scores)


class PALPARScore:
    DESCRIPTION = ("Perceptual Artifacts Ratio (artifact area / image area) per image: from images and a detector, "
                   "or from an artifact mask. Lower is better; 0 means no artifact found. Shown on the node after a run.")
    CATEGORY = RANK_CATEGORY
    FUNCTION = "score"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("par", "report")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_NODE = True  # a score is a result of its own: the node runs even with nothing connected
    OUTPUT_TOOLTIPS = ("PAR per image (a list).", "JSON: index and PAR of each image (and the model, when it ran one).")

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
        model = None
        if mask is not None:
            scores = par_of_probability(check_mask(mask), threshold)
        elif images is not None and detector is not None:
            scores = par_of_probability(predict(detector, images, threshold), threshold)
            model = detector.name
        else:
            raise ValueError("PAR Score needs either a mask, or images and a detector: connect one of them")
        scores = [round(float(p), 6) for p in scores]
        report = json.dumps([{"index": i, "par": p, **({"model": model} if model else {})} if p == p else
                             {"index": i, "par": None, "error": NOT_FINITE, **({"model": model} if model else {})}
                             for i, p in enumerate(scores)])
        return shown((scores, report), par_lines(scores), scores)


class PALRankByPAR:
    DESCRIPTION = ("Ranks a batch (e.g. one prompt over many seeds) by PAR, best first, and keeps the top k "
                   "and/or those under a PAR limit: pick the seeds with the fewest artifacts. After a run the node lists "
                   "every image's PAR, best first, and which were kept.")
    CATEGORY = RANK_CATEGORY
    FUNCTION = "rank"
    RETURN_TYPES = ("IMAGE", "MASK", "INT", "FLOAT", "STRING")
    RETURN_NAMES = ("images", "masks", "indices", "par", "report")
    OUTPUT_IS_LIST = (False, False, True, True, False)
    OUTPUT_TOOLTIPS = ("The kept images, best first.", "Their artifact masks.",
                       "Their positions in the input batch.", "Their PAR.",
                       "JSON: the model, every image's index, PAR and whether it was kept (or why nothing was).")

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
        probability = predict(detector, images, threshold)
        masks = binarize(probability, threshold).float()
        scores = par_of_probability(probability, threshold)
        kept = rank_by_par(scores, top_k, max_par)
        report = {"model": detector.name,
                  "images": [{"index": i, "par": round(float(p), 6), "kept": i in kept} if p == p else
                             {"index": i, "par": None, "kept": False, "error": NOT_FINITE}
                             for i, p in enumerate(scores.tolist())]}
        if not kept:
            scored = [i for i, p in enumerate(scores.tolist()) if p == p]
            best = min(scored, key=lambda i: float(scores[i])) if scored else None
            report["message"] = (f"no image has PAR <= {max_par} (the best, image {best}, has "
                                 f"{float(scores[best]):.4f}); raise max_par to keep some" if best is not None else
                                 f"no image could be scored: every one has {NOT_FINITE}")
            print(f"[PAL] Rank by PAR: {report['message']}")
        index = torch.tensor(kept, dtype=torch.long)
        result = (images.index_select(0, index.to(images.device)), masks.index_select(0, index.to(masks.device)),
                  kept, [round(float(scores[i]), 6) for i in kept], json.dumps(report))
        return shown(result, rank_lines(report), [item["par"] for item in report["images"]])


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
