"""An inpainter that runs the user's own ComfyUI model: ComfyUI's inpaint conditioning and KSampler.

Only importable inside ComfyUI (it uses ComfyUI's `nodes` module); PALComfyInpainter imports it
when the node runs. Each crop goes through InpaintModelConditioning (works with inpainting and
normal checkpoints, with a noise mask so only the masked region changes) and common_ksampler.
"""

from __future__ import annotations

import torch

import comfy.latent_formats
import nodes as comfy_nodes  # ComfyUI's nodes.py (a top-level module inside ComfyUI)

from pal_core.refinement.inpainters import Inpainter


def training_size(model) -> int:
    """The image size a ComfyUI model works best at: 512 for SD 1.x/2.x latents, 1024 for SDXL and later."""
    latent_format = getattr(getattr(model, "model", None), "latent_format", None)
    return 512 if isinstance(latent_format, comfy.latent_formats.SD15) else 1024


class ComfyModelInpainter(Inpainter):
    multiple = 8  # the VAE works on 8x8 pixel blocks; crops are planned accordingly

    def __init__(self, model, vae, positive, negative, steps: int, cfg: float, sampler_name: str, scheduler: str,
                 denoise: float):
        self.model, self.vae = model, vae
        self.positive, self.negative = positive, negative
        self.steps, self.cfg, self.denoise = steps, cfg, denoise
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.name = f"comfyui:{sampler_name}/{scheduler}"
        self.resolution = training_size(model)

    def _inpaint(self, crops: torch.Tensor, masks: torch.Tensor, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        results = []
        for crop, mask, seed in zip(crops, masks, seeds):  # one at a time: each region has its own seed
            positive, negative, latent = comfy_nodes.InpaintModelConditioning().encode(
                self.positive, self.negative, crop.unsqueeze(0), self.vae, mask.unsqueeze(0), noise_mask=True)
            (sampled,) = comfy_nodes.common_ksampler(self.model, seed, self.steps, self.cfg, self.sampler_name,
                                                      self.scheduler, positive, negative, latent, denoise=self.denoise)
            decoded = self.vae.decode(sampled["samples"])
            results.append(decoded.reshape(-1, *decoded.shape[-3:])[0].to(crops.device, crops.dtype))
        return torch.stack(results)
