"""Inpainter nodes: one loader per kind (OpenCV, diffusers) and ComfyUI Model Inpainter.

All output a PAL_INPAINTER: an object with `inpaint(crops, masks, prompts, seeds)` (see
`pal_core.refinement.inpainters.base.Inpainter`) that Zoom Inpaint and Auto Fix call.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pal_core.refinement.inpainters import Inpainter, available_weight_free, make_inpainter

from . import comfy_env

INPAINTERS_CATEGORY = "PAL/fix/inpainters"
DEPRECATED_CATEGORY = "PAL/deprecated"
OPENCV_CHOICES = list(available_weight_free())  # the default first; xphoto ones where opencv-contrib is installed
DIFFUSERS_PREFIX = "diffusers/"
CHECKPOINT_PREFIX = "checkpoints/"

# Fallbacks for listing the inputs outside ComfyUI (the headless runner validates against them);
# inside ComfyUI the lists come from comfy.samplers.
FALLBACK_SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_sde",
                     "dpmpp_2m_sde", "ddim", "uni_pc"]
FALLBACK_SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]


def diffusers_folders() -> list[str]:
    """Pipeline folders (with model_index.json) under models/diffusers."""
    roots = comfy_env.model_folders("diffusers")
    found = set()
    for root in map(Path, roots):
        if root.is_dir():
            found.update(str(p.parent.relative_to(root)) for p in root.rglob("model_index.json"))
    return sorted(found)


def diffusion_choices() -> list[str]:
    """Diffusers pipeline folders and single-file checkpoints, each prefixed with where it lives."""
    return [*(DIFFUSERS_PREFIX + f for f in diffusers_folders()),
            *(CHECKPOINT_PREFIX + f for f in comfy_env.model_files("checkpoints")
              if f.lower().endswith((".safetensors", ".ckpt")))]


def inpainter_choices() -> list[str]:
    return [*OPENCV_CHOICES, *diffusion_choices()]


def resolve_diffusers_path(choice: str) -> str:
    if choice.startswith(DIFFUSERS_PREFIX):
        name = choice[len(DIFFUSERS_PREFIX):]
        for root in comfy_env.model_folders("diffusers"):
            if (Path(root) / name / "model_index.json").is_file():
                return str(Path(root) / name)
        raise FileNotFoundError(f"diffusers pipeline '{name}' not found in models/diffusers")
    return comfy_env.model_path("checkpoints", choice[len(CHECKPOINT_PREFIX):])


def load_opencv(method: str, radius: float) -> Inpainter:
    """`method` as the CLI spells it without "opencv-" (e.g. "fsr-fast@128"); radius 0: scaled with the crop."""
    return make_inpainter(f"opencv-{method}", radius=radius or None)


def load_diffusers(choice: str, device: str, precision: str, **settings) -> Inpainter:
    """A diffusers inpainter with these settings; the pipeline itself is loaded once and reused
    (loading one takes seconds to minutes), only the last one is kept."""
    torch_device = comfy_env.torch_device() if device == "auto" else torch.device(device)
    if precision == "auto":
        precision = "fp32" if torch_device.type == "cpu" else "fp16"
    dtype = "fp32" if torch_device.type == "cpu" and precision == "fp16" else precision
    path = resolve_diffusers_path(choice)
    key = (path, str(torch_device), dtype)
    if key not in _PIPELINES:
        _PIPELINES.clear()
        comfy_env.release_memory()
        _PIPELINES[key] = make_inpainter(f"diffusers:{path}", device=torch_device, dtype=dtype)
    loaded = _PIPELINES[key]
    return type(loaded)(loaded.pipeline, name=loaded.name, **settings)


_PIPELINES: dict[tuple, Inpainter] = {}
DEVICE = (["auto", "cpu", "cuda"], {"default": "auto", "tooltip": "auto: ComfyUI's device."})
NEGATIVE_PROMPT = ("STRING", {"default": "", "multiline": True, "tooltip": "What the repaired regions should not show."})
STEPS = ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Sampling steps."})
GUIDANCE = ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free guidance scale."})
STRENGTH = ("FLOAT", {"default": 0.99, "min": 0.01, "max": 1.0, "step": 0.01,
                      "tooltip": "How much of the masked region is re-noised (1 = all)."})


class InpainterNode:
    """What every inpainter node gives: one PAL_INPAINTER for Zoom Inpaint or Auto Fix."""

    CATEGORY = INPAINTERS_CATEGORY
    RETURN_TYPES = ("PAL_INPAINTER",)
    RETURN_NAMES = ("inpainter",)
    OUTPUT_TOOLTIPS = ("Connect to Zoom Inpaint or Auto Fix; crops are inpainted at the model's own size "
                       "(SD 1.x 512, SDXL 1024) unless the node says otherwise.",)


class PALLoadOpenCVInpainter(InpainterNode):
    DESCRIPTION = ("OpenCV's inpainting for Zoom Inpaint and Auto Fix: fills each region from its "
                   "surroundings. No model, no prompt, fast on any CPU; smooths rather than invents detail.")
    FUNCTION = "load"
    OUTPUT_TOOLTIPS = ("Connect to Zoom Inpaint or Auto Fix.",)

    @classmethod
    def INPUT_TYPES(cls):
        methods = [spec[len("opencv-"):] for spec in available_weight_free()]
        return {"required": {
            "method": (methods, {"default": methods[0], "tooltip": (
                "The first is the measured best (docs/benchmarks.md: Which weight-free inpainter). fsr: frequency selective "
                "reconstruction, fills with texture; @128: at most 128 px wide, fast. telea / ns: fast marching / "
                "Navier-Stokes, smooth fills. shiftmap: copies patches, slow. fsr/shiftmap need opencv-contrib.")}),
            "radius": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.5,
                                 "tooltip": "telea / ns: pixels each filled pixel looks at. 0: 1% of the crop's side "
                                            "(at least 3), so zoomed-in crops are filled alike."}),
        }}

    def load(self, method: str, radius: float):
        return (load_opencv(method, radius),)


class PALLoadDiffusersInpainter(InpainterNode):
    DESCRIPTION = ("A Stable Diffusion 1.x/2.x/SDXL inpainting model for Zoom Inpaint and Auto Fix: a diffusers "
                   "pipeline folder from models/diffusers or a checkpoint from models/checkpoints, with its prompt. "
                   "To use a model loaded in ComfyUI instead, use ComfyUI Model Inpainter.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        models = diffusion_choices()
        return {"required": {
            "model": (models, {"default": models[0] if models else "",
                               "tooltip": "Pipelines in models/diffusers/<name>/ and inpainting checkpoints in "
                                          "models/checkpoints."}),
            "prompt": ("STRING", {"default": "", "multiline": True,
                                  "tooltip": "What the repaired regions should show, e.g. the generation's prompt."}),
            "negative_prompt": NEGATIVE_PROMPT,
            "steps": STEPS,
            "guidance": GUIDANCE,
            "strength": STRENGTH,
            "device": DEVICE,
            "precision": (["auto", "fp16", "bf16", "fp32"], {"default": "auto", "tooltip": "auto: fp16 on a GPU, "
                                                                                           "fp32 on the CPU."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        """Says where models go when there is none (ComfyUI would only say the value is not in an empty list)."""
        if model in diffusion_choices():
            return True
        return (f"no inpainting model '{model}': put a diffusers pipeline folder in models/diffusers/<name>/ or an "
                "inpainting checkpoint in models/checkpoints/, then press R to refresh; or use Load OpenCV Inpainter "
                "(no model) or ComfyUI Model Inpainter (a checkpoint you load in ComfyUI)")

    def load(self, model, prompt, negative_prompt, steps, guidance, strength, device, precision):
        return (load_diffusers(model, device, precision, prompt=prompt, negative_prompt=negative_prompt, steps=steps,
                               guidance=guidance, strength=strength),)


class PALLoadInpainter(InpainterNode):
    DESCRIPTION = ("Deprecated: use Load OpenCV Inpainter or Load Diffusers Inpainter (each shows only the "
                   "settings it uses). Kept so saved workflows load.")
    DEPRECATED = True
    CATEGORY = DEPRECATED_CATEGORY
    FUNCTION = "load"
    OUTPUT_TOOLTIPS = ("Connect to Zoom Inpaint or Auto Fix.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "inpainter": (inpainter_choices(), {"default": OPENCV_CHOICES[0],
                                                "tooltip": "OpenCV needs no model; diffusion models give real "
                                                           "content but need a GPU to be quick."}),
            "negative_prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "Diffusion only."}),
            "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Diffusion sampling steps."}),
            "guidance": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1,
                                   "tooltip": "Classifier-free guidance scale (diffusion)."}),
            "strength": ("FLOAT", {"default": 0.99, "min": 0.01, "max": 1.0, "step": 0.01,
                                   "tooltip": "How much of the masked region is re-noised (diffusion; 1 = all)."}),
            "device": DEVICE,
            "precision": (["fp16", "bf16", "fp32"], {"default": "fp16",
                                                     "tooltip": "Diffusion precision (fp16 needs a GPU)."}),
        }}

    def load(self, inpainter, negative_prompt, steps, guidance, strength, device, precision):
        if inpainter in OPENCV_CHOICES:
            return (load_opencv(inpainter[len("opencv-"):], 0.0),)
        return (load_diffusers(inpainter, device, precision, negative_prompt=negative_prompt, steps=steps,
                               guidance=guidance, strength=strength),)


class PALComfyInpainter(InpainterNode):
    DESCRIPTION = ("Inpaints each crop with your own checkpoint through ComfyUI's sampler (inpainting or normal "
                   "models): MODEL and VAE from a checkpoint loader, conditioning from CLIP Text Encode.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        samplers, schedulers = comfy_env.sampler_names(FALLBACK_SAMPLERS, FALLBACK_SCHEDULERS)
        return {"required": {
            "model": ("MODEL", {"tooltip": "The diffusion model, e.g. from Load Checkpoint."}),
            "vae": ("VAE", {"tooltip": "Encodes the crops and decodes the result."}),
            "positive": ("CONDITIONING", {"tooltip": "What the repaired regions should show."}),
            "negative": ("CONDITIONING", {"tooltip": "What they should not show."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip": "Sampling steps."}),
            "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": "Guidance scale."}),
            "sampler_name": (samplers, {"default": "euler", "tooltip": "ComfyUI sampler."}),
            "scheduler": (schedulers, {"default": "normal", "tooltip": "ComfyUI scheduler."}),
            "denoise": ("FLOAT", {"default": 0.8, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of the masked region is repainted (1 = all)."}),
        }}

    def make(self, model, vae, positive, negative, steps, cfg, sampler_name, scheduler, denoise):
        from .comfy_sampling import ComfyModelInpainter

        return (ComfyModelInpainter(model, vae, positive, negative, steps, cfg, sampler_name, scheduler, denoise),)


NODE_CLASS_MAPPINGS = {
    "PALLoadOpenCVInpainter": PALLoadOpenCVInpainter,
    "PALLoadDiffusersInpainter": PALLoadDiffusersInpainter,
    "PALComfyInpainter": PALComfyInpainter,
    "PALLoadInpainter": PALLoadInpainter,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PALLoadOpenCVInpainter": "Load OpenCV Inpainter (PAL)",
    "PALLoadDiffusersInpainter": "Load Diffusers Inpainter (PAL)",
    "PALComfyInpainter": "ComfyUI Model Inpainter (PAL)",
    "PALLoadInpainter": "Load Inpainter (PAL, old)",
}
