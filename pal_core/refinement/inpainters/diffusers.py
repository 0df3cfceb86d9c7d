"""Stable Diffusion inpainting (1.x, 2.x, SDXL) through diffusers, from local files only.

diffusers is imported when a pipeline is loaded, not when `pal_core` is: importing it (and
transformers) takes seconds and most uses of the detector never need it. Nothing is ever
downloaded: a folder must be a saved diffusers pipeline (model_index.json), and a single checkpoint
file needs its component configs either in the local Hugging Face cache or in a folder given as
`config`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ...detect.devices import resolve_device, resolve_dtype
from .base import Inpainter

CHECKPOINT_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".bin"}
# "owner/name" with no such path here: almost certainly a Hugging Face hub id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Key prefix that only SDXL single-file checkpoints have (the second, OpenCLIP-G text encoder).
_SDXL_KEY = "conditioner.embedders.1"


class InpainterLoadError(ValueError):
    """A diffusers model path that is missing, not a pipeline, or needs files that are not here."""


class DiffusersInpainter(Inpainter):
    """A loaded diffusers inpainting pipeline and the sampling settings it runs with.

    Region i gets a generator seeded with its own seed (refinement passes seed + i), created on the
    CPU so the same seed gives the same noise on every device. Crops are run `batch_size` at a
    time: SDXL at 1024x1024 does not fit many crops in memory at once.
    """

    multiple = 8

    def __init__(self, pipeline: Any, negative_prompt: str = "", steps: int = 30, guidance: float = 7.5,
                 strength: float = 0.99, batch_size: int = 1, name: str = "diffusers", prompt: str = ""):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, not {steps}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], not {strength}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.pipeline = pipeline
        self.negative_prompt = negative_prompt
        self.steps = steps
        self.guidance = guidance
        self.strength = strength  # 0.99, not 1: the SDXL inpainting model card's advice, harmless for SD 1.x
        self.batch_size = batch_size
        self.name = name
        self.prompt = prompt  # the model's own prompt: used for every crop the caller gives no prompt for
        self.resolution = _training_size(pipeline)

    def _inpaint(self, crops: torch.Tensor, masks: torch.Tensor, prompts: list[str], seeds: list[int]) -> torch.Tensor:
        height, width = crops.shape[1:3]
        if height % 8 or width % 8:
            raise ValueError(f"crops are {height}x{width}; diffusion inpainting needs sides that are multiples of 8 "
                             "(plan crops with multiple=8)")
        prompts = [p or self.prompt for p in prompts]
        device = self.pipeline.device
        images = crops.detach().permute(0, 3, 1, 2).to(device, torch.float32)
        mask_images = (masks.detach() > 0.5).unsqueeze(1).to(device, torch.float32)
        results = []
        for start in range(0, crops.shape[0], self.batch_size):
            chunk = slice(start, start + self.batch_size)
            count = len(prompts[chunk])
            output = self.pipeline(
                prompt=prompts[chunk], negative_prompt=[self.negative_prompt] * count,
                image=images[chunk], mask_image=mask_images[chunk], height=height, width=width,
                num_inference_steps=self.steps, guidance_scale=self.guidance, strength=self.strength,
                generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds[chunk]],
                output_type="pt",
            )
            results.append(output.images.float().clamp(0, 1))
        return torch.cat(results).permute(0, 2, 3, 1)


def _training_size(pipeline: Any) -> int | None:
    """The image size the pipeline's UNet was trained at (SD 1.x: 512, SDXL: 1024), from its config."""
    sample_size = getattr(getattr(getattr(pipeline, "unet", None), "config", None), "sample_size", None)
    scale = getattr(pipeline, "vae_scale_factor", None)
    return int(sample_size) * int(scale) if isinstance(sample_size, int) and isinstance(scale, int) else None


def load_diffusers_inpainter(path: str | os.PathLike, device: str | torch.device | None = None,
                             dtype: str | torch.dtype | None = None, config: str | os.PathLike | None = None,
                             **settings: Any) -> DiffusersInpainter:
    """Loads an inpainting pipeline from a local folder or checkpoint file; `settings` go to
    `DiffusersInpainter` (prompt, negative_prompt, steps, guidance, strength, batch_size)."""
    torch_device = resolve_device(device)
    # No measured "auto" for diffusion yet: unset means float32, as before.
    torch_dtype = resolve_dtype("fp32" if dtype is None else dtype, torch_device)
    pipeline = _load_pipeline(_local_model_path(path), torch_dtype, config)
    pipeline = pipeline.to(torch_device)
    pipeline.set_progress_bar_config(disable=True)  # refinement shows its own progress
    return DiffusersInpainter(pipeline, name=f"diffusers:{Path(path).name}", **settings)


def _local_model_path(path: str | os.PathLike) -> Path:
    """The path as an existing file or folder, or an error that says why it cannot be used."""
    local = Path(path).expanduser()
    if local.exists():
        return local
    text = str(path)
    if _HUB_ID.match(text):
        raise InpainterLoadError(
            f"'{text}' is not a file or folder here; it looks like a Hugging Face hub id. PAL never downloads "
            "models: download the pipeline yourself (e.g. `huggingface-cli download " + text + " --local-dir DIR`) "
            "and pass the local folder, or pass a single .safetensors checkpoint file")
    raise InpainterLoadError(f"inpainting model not found: {local} (give a diffusers pipeline folder or a "
                             ".safetensors/.ckpt checkpoint file)")


def _load_pipeline(path: Path, dtype: torch.dtype, config: str | os.PathLike | None) -> Any:
    from diffusers import AutoPipelineForInpainting  # lazy: see the module docstring

    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise InpainterLoadError(
                f"{path} is a folder but not a diffusers pipeline (no model_index.json). Give the pipeline's "
                "top folder (the one saved by save_pretrained), or a single checkpoint file")
        try:
            return AutoPipelineForInpainting.from_pretrained(path, local_files_only=True, **_dtype_argument(dtype))
        except (OSError, ValueError) as error:
            raise InpainterLoadError(f"{path}: could not load the diffusers pipeline ({error})") from error
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise InpainterLoadError(f"{path}: not a checkpoint file (expected one of {sorted(CHECKPOINT_SUFFIXES)}) "
                                 "or a diffusers pipeline folder")
    return _load_single_file(path, dtype, config)


def _load_single_file(path: Path, dtype: torch.dtype, config: str | os.PathLike | None) -> Any:
    """A single SD 1.x/2.x or SDXL checkpoint; the SDXL pipeline is chosen from the file's keys."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    is_sdxl = _is_sdxl_checkpoint(path)
    pipeline_class = StableDiffusionXLInpaintPipeline if is_sdxl else StableDiffusionInpaintPipeline
    extra = {} if is_sdxl else {"safety_checker": None, "requires_safety_checker": False}
    if config is not None and not Path(config).expanduser().is_dir():
        raise InpainterLoadError(f"config {config} is not a folder; give a local diffusers pipeline folder whose "
                                 "component configs match the checkpoint")
    try:
        return pipeline_class.from_single_file(str(path), local_files_only=True,
                                               config=str(Path(config).expanduser()) if config else None,
                                               **_dtype_argument(dtype), **extra)
    except Exception as error:  # diffusers raises many kinds (IndexError, KeyError...) for unfit files
        raise InpainterLoadError(
            f"{path}: could not load the checkpoint as a {pipeline_class.__name__} without network access "
            f"({type(error).__name__}: {error}). The file must be a full SD 1.x/2.x or SDXL checkpoint, and a "
            "single checkpoint file needs its diffusers component configs: pass a local pipeline folder of the "
            "same model family as the config (--diffusers-config), or load a saved pipeline folder instead") from error


def _dtype_argument(dtype: torch.dtype) -> dict:
    """diffusers renamed `torch_dtype` to `dtype` (2026) and warns on the old name; older releases only
    know `torch_dtype` and would silently ignore `dtype`."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def _is_sdxl_checkpoint(path: Path) -> bool:
    """Reads only the safetensors header (other formats would need the whole file; assume SD 1.x/2.x)."""
    if path.suffix.lower() != ".safetensors":
        return False
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        if not 2 <= header_len < 100_000_000:
            raise InpainterLoadError(f"{path}: not a valid .safetensors file (bad header length)")
        header = json.loads(f.read(header_len))
    return any(key.startswith(_SDXL_KEY) for key in header)
