"""Inpainter nodes: Load Inpainter (OpenCV or a diffusers model) and ComfyUI Model Inpainter.

Both output a PAL_INPAINTER: an object with `inpaint(crops, masks, prompts, seeds)` (see
`pal_core.inpainters.base.Inpainter`) that Zoom Inpaint and Auto Fix call.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pal_core.inpainters import Inpainter, available_weight_free, make_inpainter

from . import comfy_env

OPENCV_CHOICES = list(available_weight_free())  # the xphoto ones only where opencv-contrib is installed
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


def inpainter_choices() -> list[str]:
    return [*OPENCV_CHOICES, *(DIFFUSERS_PREFIX + f for f in diffusers_folders()),
            *(CHECKPOINT_PREFIX + f for f in comfy_env.model_files("checkpoints")
              if f.lower().endswith((".safetensors", ".ckpt")))]


def resolve_diffusers_path(choice: str) -> str:
    if choice.startswith(DIFFUSERS_PREFIX):
        name = choice[len(DIFFUSERS_PREFIX):]
        for root in comfy_env.model_folders("diffusers"):
            if (Path(root) / name / "model_index.json").is_file():
                return str(Path(root) / name)
        raise FileNotFoundError(f"diffusers pipeline '{name}' not found in models/diffusers")
    return comfy_env.model_path("checkpoints", choice[len(CHECKPOINT_PREFIX):])


class PALLoadInpainter:
    DESCRIPTION = ("An inpainter for Zoom Inpaint and Auto Fix: OpenCV (no weights, fast; the first choice is the "
                   "measured best, see the README) "
                   "or a Stable Diffusion 1.x/2.x/SDXL inpainting model from models/diffusers or models/checkpoints.")
    CATEGORY = "PAL"
    FUNCTION = "load"
    RETURN_TYPES = ("PAL_INPAINTER",)
    RETURN_NAMES = ("inpainter",)
    OUTPUT_TOOLTIPS = ("Connect to Zoom Inpaint or Auto Fix.",)
    _cache: dict[tuple, Inpainter] = {}  # the last diffusers pipeline: loading one takes seconds to minutes

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "inpainter": (inpainter_choices(), {"tooltip": "OpenCV needs no model; diffusion models give real "
                                                           "content but need a GPU to be quick."}),
            "negative_prompt": ("STRING", {"default": "", "multiline": True, "tooltip": "Diffusion only."}),
            "steps": ("INT", {"default": 30, "min": 1, "max": 200, "tooltip": "Diffusion sampling steps."}),
            "guidance": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1,
                                   "tooltip": "Classifier-free guidance scale (diffusion)."}),
            "strength": ("FLOAT", {"default": 0.99, "min": 0.01, "max": 1.0, "step": 0.01,
                                   "tooltip": "How much of the masked region is re-noised (diffusion; 1 = all)."}),
            "device": (["auto", "cpu", "cuda"], {"tooltip": "auto: ComfyUI's device."}),
            "precision": (["fp16", "bf16", "fp32"], {"tooltip": "Diffusion precision (fp16 needs a GPU)."}),
        }}

    def load(self, inpainter, negative_prompt, steps, guidance, strength, device, precision):
        if inpainter in OPENCV_CHOICES:
            return (make_inpainter(inpainter),)
        torch_device = comfy_env.torch_device() if device == "auto" else torch.device(device)
        dtype = "fp32" if torch_device.type == "cpu" and precision == "fp16" else precision
        path = resolve_diffusers_path(inpainter)
        key = (path, str(torch_device), dtype, negative_prompt, steps, guidance, strength)
        if key not in self._cache:
            self._cache.clear()
            comfy_env.release_memory()
            self._cache[key] = make_inpainter(f"diffusers:{path}", device=torch_device, dtype=dtype,
                                              negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                                              strength=strength)
        return (self._cache[key],)


class PALComfyInpainter:
    DESCRIPTION = ("Inpaints each crop with your own checkpoint through ComfyUI's sampler (inpainting or normal "
                   "models): MODEL and VAE from a checkpoint loader, conditioning from CLIP Text Encode.")
    CATEGORY = "PAL"
    FUNCTION = "make"
    RETURN_TYPES = ("PAL_INPAINTER",)
    RETURN_NAMES = ("inpainter",)
    OUTPUT_TOOLTIPS = ("Connect to Zoom Inpaint or Auto Fix (the prompt there is ignored: the conditioning is used).",)

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
            "sampler_name": (samplers, {"tooltip": "ComfyUI sampler."}),
            "scheduler": (schedulers, {"tooltip": "ComfyUI scheduler."}),
            "denoise": ("FLOAT", {"default": 0.8, "min": 0.01, "max": 1.0, "step": 0.01,
                                  "tooltip": "How much of the masked region is repainted (1 = all)."}),
        }}

    def make(self, model, vae, positive, negative, steps, cfg, sampler_name, scheduler, denoise):
        from .comfy_sampling import ComfyModelInpainter

        return (ComfyModelInpainter(model, vae, positive, negative, steps, cfg, sampler_name, scheduler, denoise),)


NODE_CLASS_MAPPINGS = {
    "PALLoadInpainter": PALLoadInpainter,
    "PALComfyInpainter": PALComfyInpainter,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PALLoadInpainter": "Load Inpainter (PAL)",
    "PALComfyInpainter": "ComfyUI Model Inpainter (PAL)",
}
