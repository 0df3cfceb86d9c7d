"""Our own implementations of the ComfyUI core nodes that workflows around the PAL nodes use.

Same class names, inputs, outputs and behaviour as ComfyUI's (nodes.py, comfy_extras), written for the
headless runner: files are read from the run's input folder and written to its output folder (see
context.py) instead of ComfyUI's folder_paths. Deliberate differences are noted where they are.
"""

from __future__ import annotations

import json
import os
import random
import re
import string
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..imageio import IMAGE_SUFFIXES, ImageReadError, open_image, read_frames, read_image, write_png
from .context import RunContext, current_run

MAX_RESOLUTION = 16384
UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]
_ANNOTATION = re.compile(r"^(.*?)\s*\[(input|output|temp)\]$")


# ------------------------------------------------------------------------------------------ helpers

def _run() -> RunContext:
    context = current_run()
    if context is None:
        raise RuntimeError("this node reads or writes files and must run inside `pal run` (run_workflow)")
    return context


def _inside(base: Path, relative: str) -> Path | None:
    """base/relative, or None when that would leave `base` (an absolute path, '..', a symlink out)."""
    base = base.resolve()
    target = (base / relative).resolve()
    return target if target == base or base in target.parents else None


def input_image_path(name: str) -> Path | None:
    """The file a LoadImage value names: 'x.png', 'sub/x.png', or annotated 'x.png [output]' as ComfyUI."""
    context = _run()
    folder = context.input_dir
    match = _ANNOTATION.match(name)
    if match:
        name = match.group(1)
        folder = {"input": context.input_dir, "output": context.output_dir,
                  "temp": context.preview_dir}[match.group(2)]
        if folder is None:
            return None
    path = _inside(folder, name)
    return path if path is not None and path.is_file() else None


def _listed_input_images() -> list[str]:
    context = current_run()
    if context is None or not context.input_dir.is_dir():
        return []
    return sorted(entry.name for entry in context.input_dir.iterdir()
                  if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES | {".gif"})


def _input_subfolders() -> list[str]:
    context = current_run()
    if context is None or not context.input_dir.is_dir():
        return []
    base = context.input_dir
    return sorted(str(path.relative_to(base)).replace(os.sep, "/") for path in base.rglob("*") if path.is_dir())


def _missing_image_message(name: str) -> str:
    context = _run()
    return (f"Invalid image file: {name} (looked in {context.input_dir}; put the file there, or pass "
            "--input-dir, or give a path inside that folder)")


def to_comfy_uint8(image: torch.Tensor) -> np.ndarray:
    """ComfyUI's conversion for saving: 255 * value, clipped, then truncated (not rounded)."""
    return np.clip(255.0 * image.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)


def resize_images(samples: torch.Tensor, width: int, height: int, method: str, crop: str) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, height, width] as ComfyUI's common_upscale: optional centre crop to the
    target aspect ratio, then torch interpolation, or Pillow's Lanczos on 8-bit values."""
    if crop == "center":
        old_h, old_w = samples.shape[-2], samples.shape[-1]
        old_aspect, new_aspect = old_w / old_h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
        samples = samples.narrow(-2, y, old_h - 2 * y).narrow(-1, x, old_w - 2 * x)
    if method == "lanczos":
        resized = []
        for image in samples:
            pil = Image.fromarray(to_comfy_uint8(image.movedim(0, -1)))
            pil = pil.resize((width, height), resample=Image.Resampling.LANCZOS)
            resized.append(torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0).movedim(-1, 0))
        return torch.stack(resized).to(samples.device, samples.dtype)
    return F.interpolate(samples, size=(height, width), mode=method)


# --------------------------------------------------------------------------------------------- load

class LoadImage:
    """Image and mask from a file in the input folder. Mask = 1 - alpha (transparent = 1, "inpaint
    here"); without alpha, a 64x64 zero mask, as ComfyUI. Animated files give one image per frame
    (frames of another size than the first are skipped, as ComfyUI). Difference: 16-bit images are
    scaled from their full range; ComfyUI's 8-bit conversion clips them."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (_listed_input_images(), {"image_upload": True})}}

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        if image is None:
            return True  # linked: checked when it runs
        return True if input_image_path(image) is not None else _missing_image_message(image)

    def load_image(self, image):
        path = input_image_path(image)
        if path is None:
            raise ImageReadError(_missing_image_message(image))
        frames = read_frames(path)
        height, width = frames[0][0].shape[:2]
        frames = [frame for frame in frames if frame[0].shape[:2] == (height, width)]
        any_alpha = any(alpha is not None for _, alpha in frames)
        images, masks = [], []
        for rgb, alpha in frames:
            images.append(rgb)
            if alpha is not None:
                masks.append(1.0 - alpha)
            else:  # ComfyUI's placeholder; image-sized when other frames have alpha so they stack
                masks.append(torch.zeros((height, width) if any_alpha else (64, 64), dtype=torch.float32))
        return torch.stack(images), torch.stack(masks)


class LoadImageMask:
    """One channel of an image file as a MASK; the alpha channel is inverted (1 - alpha), as ComfyUI."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "load_image"
    CHANNELS = ["alpha", "red", "green", "blue"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (_listed_input_images(), {"image_upload": True}),
                             "channel": (cls.CHANNELS,)}}

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        if image is None:
            return True
        return True if input_image_path(image) is not None else _missing_image_message(image)

    def load_image(self, image, channel):
        path = input_image_path(image)
        if path is None:
            raise ImageReadError(_missing_image_message(image))
        rgb, alpha = read_image(path, with_alpha=True)
        if channel == "alpha":
            mask = 1.0 - alpha if alpha is not None else torch.zeros(rgb.shape[:2])
        else:
            mask = rgb[..., ["red", "green", "blue"].index(channel)]
        return (mask.unsqueeze(0),)


class LoadImageSetFromFolderNode:
    """Every .png/.jpg/.jpeg/.webp in a subfolder of the input folder as one IMAGE batch (ComfyUI's
    "Load Image Dataset from Folder"). Images of another size than the first are resized to it
    (Stretch; ComfyUI's Pad does the same), cropped from the top-left corner (Crop), or refused (None).
    Difference: files are taken in name order; ComfyUI takes the file system's order."""

    CATEGORY = "loaders"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "load_images"
    EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"folder": (_input_subfolders(), {"tooltip": "The folder to load images from."})},
                "optional": {"resize_method": (["None", "Stretch", "Crop", "Pad"], {"default": "None"})}}

    def load_images(self, folder, resize_method="None"):
        directory = _inside(_run().input_dir, folder)
        if directory is None or not directory.is_dir():
            raise FileNotFoundError(f"no folder {folder!r} in the input folder {_run().input_dir}")
        # a link in the folder to a file outside the input folder is not read: the loader stays inside it
        base = _run().input_dir.resolve()
        files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in self.EXTENSIONS
                       and base in p.resolve().parents)
        if not files:
            raise ValueError(f"no .png/.jpg/.jpeg/.webp images in {directory}")
        images, size = [], None
        for path in files:
            with open_image(path) as opened:
                img = opened.point(lambda v: v * (1 / 255)) if opened.mode == "I" else opened
                img = img.convert("RGB")
            size = size or img.size
            if img.size != size:
                if resize_method in ("Stretch", "Pad"):
                    img = img.resize(size, Image.Resampling.LANCZOS)
                elif resize_method == "Crop":
                    img = img.crop((0, 0, *size))
                else:
                    raise ValueError(f"{path.name} is {img.size[0]}x{img.size[1]} but the first image is "
                                     f"{size[0]}x{size[1]}; choose a resize_method or use images of one size")
            images.append(torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0))
        return (torch.stack(images),)


# --------------------------------------------------------------------------------------------- save

def _expand_prefix_variables(prefix: str, width: int, height: int) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02d}",
              "day": f"{now.tm_mday:02d}", "hour": f"{now.tm_hour:02d}", "minute": f"{now.tm_min:02d}",
              "second": f"{now.tm_sec:02d}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


MAX_NAME_BYTES = 200  # 255 for a name, less '_00001_.png' and the temporary name's '.<pid>.<token>.pal-tmp'
MAX_PREFIX_CHARS = 1024


def split_prefix(prefix: str, base: Path) -> tuple[Path, str, str]:
    """(folder, file name stem, subfolder) for a filename_prefix such as 'sub/name'; refuses prefixes
    that would leave `base`, as ComfyUI does."""
    parts = prefix.replace("\\", "/").split("/")
    if len(prefix) > MAX_PREFIX_CHARS or any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
                                             for part in parts):
        raise ValueError(f"filename_prefix is too long ({len(prefix)} characters, starting {prefix[:40]!r}): a "
                         f"file or folder name holds at most {MAX_NAME_BYTES} bytes here (the file system's 255, "
                         "less the counter and suffix); use a shorter prefix")
    normalised = os.path.normpath(prefix)
    subfolder, filename = os.path.split(normalised)
    folder = _inside(base, subfolder)
    if folder is None or os.path.isabs(prefix) or not filename or filename in (".", ".."):
        raise ValueError(f"filename_prefix {prefix!r} would save outside the output folder {base}; "
                         "use a name or a relative path inside it, like 'results/fixed'")
    return folder, filename, subfolder


def next_counter(folder: Path, filename: str) -> int:
    """1 + the highest counter among '<filename>_<counter>_*' files in `folder` (1 when none)."""
    if not folder.is_dir():
        return 1
    pattern = re.compile(re.escape(os.path.normcase(filename)) + r"_(\d+)_")
    counters = [int(m.group(1)) for entry in os.listdir(folder) if (m := pattern.match(os.path.normcase(entry)))]
    return max(counters, default=0) + 1


def _png_text(prompt, extra_pnginfo) -> dict[str, str]:
    text = {}
    if prompt is not None:
        text["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        text[key] = json.dumps(value)
    return text


def save_batch(images: torch.Tensor, prefix: str, base: Path, kind: str, text: dict[str, str],
               compress_level: int) -> list[dict]:
    """Writes each image as '<prefix>_<counter>_.png', counting on from existing files; never replaces one."""
    height, width = int(images[0].shape[0]), int(images[0].shape[1])
    folder, filename, subfolder = split_prefix(_expand_prefix_variables(prefix, width, height), base)
    counter = next_counter(folder, filename)
    saved = []
    for batch_number, image in enumerate(images):
        stem = filename.replace("%batch_num%", str(batch_number))
        while True:
            name = f"{stem}_{counter:05}_.png"
            try:
                write_png(folder / name, to_comfy_uint8(image), overwrite=False, text=text,
                          compress_level=compress_level)
                break
            except FileExistsError:  # written by someone else since we counted: take the next number
                counter += 1
        saved.append({"filename": name, "subfolder": subfolder.replace(os.sep, "/"), "type": kind})
        counter += 1
    return saved


class SaveImage:
    """Writes PNGs '<filename_prefix>_00001_.png', '..._00002_.png', ... into the output folder, with
    the workflow in the PNG's text chunks as ComfyUI does; never overwrites."""

    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",),
                             "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix):
        if filename_prefix is None:
            return True
        try:
            split_prefix(_expand_prefix_variables(filename_prefix, 1, 1), _run().output_dir)
        except ValueError as error:
            return str(error)
        return True

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        saved = save_batch(images, filename_prefix, _run().output_dir, "output",
                           _png_text(prompt, extra_pnginfo), compress_level=4)
        return {"ui": {"images": saved}}


class PreviewImage:
    """Shows images in ComfyUI. Headless there is nothing to show: with a preview folder (--preview-dir)
    they are written there as ComfyUI writes its temp previews, else only counted."""

    CATEGORY = "image"
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save_images(self, images, prompt=None, extra_pnginfo=None):
        folder = _run().preview_dir
        if folder is None:
            return {"ui": {"images": [], "previews_not_saved": [len(images)]}}
        suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
        saved = save_batch(images, f"ComfyUI_temp_{suffix}", folder, "temp", _png_text(prompt, extra_pnginfo),
                           compress_level=1)
        return {"ui": {"images": saved}}


# ------------------------------------------------------------------------------------------- images

class ImageBatch:
    """Two image batches as one; the second is resized (bilinear, centre crop) to the first's size."""

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    def batch(self, image1, image2):
        if image1.shape[1:] != image2.shape[1:]:
            image2 = resize_images(image2.movedim(-1, 1), image1.shape[2], image1.shape[1], "bilinear",
                                   "center").movedim(1, -1)
        return (torch.cat((image1, image2), dim=0),)


class ImageScale:
    """Resize to width x height; a 0 keeps the aspect ratio from the other side, both 0 keep the image."""

    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}
        return {"required": {"image": ("IMAGE",), "upscale_method": (UPSCALE_METHODS,),
                             "width": ("INT", dict(size)), "height": ("INT", dict(size)),
                             "crop": (CROP_METHODS,)}}

    def upscale(self, image, upscale_method, width, height, crop):
        if width == 0 and height == 0:
            return (image,)
        samples = image.movedim(-1, 1)
        if width == 0:
            width = max(1, round(samples.shape[3] * height / samples.shape[2]))
        elif height == 0:
            height = max(1, round(samples.shape[2] * width / samples.shape[3]))
        return (resize_images(samples, width, height, upscale_method, crop).movedim(1, -1),)


class ImageScaleBy:
    CATEGORY = "image/upscaling"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "upscale_method": (UPSCALE_METHODS,),
                             "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01})}}

    def upscale(self, image, upscale_method, scale_by):
        samples = image.movedim(-1, 1)
        width, height = round(samples.shape[3] * scale_by), round(samples.shape[2] * scale_by)
        return (resize_images(samples, width, height, upscale_method, "disabled").movedim(1, -1),)


class ImageInvert:
    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "invert"
    INPUT = "image"  # the one input, of the type the node returns

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {cls.INPUT: cls.RETURN_TYPES}}

    def invert(self, **inputs):
        return (1.0 - inputs[self.INPUT],)


# -------------------------------------------------------------------------------------------- masks

class InvertMask(ImageInvert):
    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    INPUT = "mask"


class MaskToImage:
    """MASK [B, H, W] -> grey IMAGE [B, H, W, 3]."""

    CATEGORY = "mask"
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "mask_to_image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    def mask_to_image(self, mask):
        return (mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3),)


class ImageToMask:
    """One channel of an IMAGE as a MASK."""

    CATEGORY = "mask"
    RETURN_TYPES = ("MASK",)
    FUNCTION = "image_to_mask"
    CHANNELS = ["red", "green", "blue", "alpha"]

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "channel": (cls.CHANNELS,)}}

    def image_to_mask(self, image, channel):
        index = self.CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"the image has {image.shape[-1]} channels, so no {channel} channel")
        return (image[:, :, :, index],)


# --------------------------------------------------------------------------------------- primitives

def _primitive(class_type: str, kind: str, options: dict | None = None) -> type:
    def execute(self, value):
        return (value,)

    return type(class_type, (), {
        "CATEGORY": "utils/primitive",
        "RETURN_TYPES": (kind,),
        "FUNCTION": "execute",
        "INPUT_TYPES": classmethod(lambda cls: {"required": {"value": (kind, dict(options or {}))}}),
        "execute": execute,
        "__doc__": f"A constant {kind} (ComfyUI's {class_type}).",
    })


PrimitiveString = _primitive("PrimitiveString", "STRING")
PrimitiveStringMultiline = _primitive("PrimitiveStringMultiline", "STRING", {"multiline": True})
PrimitiveInt = _primitive("PrimitiveInt", "INT", {"min": -sys.maxsize, "max": sys.maxsize,
                                                  "control_after_generate": True})
PrimitiveFloat = _primitive("PrimitiveFloat", "FLOAT", {"min": -sys.maxsize, "max": sys.maxsize, "step": 0.1})
PrimitiveBoolean = _primitive("PrimitiveBoolean", "BOOLEAN")


NODE_CLASS_MAPPINGS: dict[str, type] = {cls.__name__: cls for cls in (
    LoadImage, LoadImageMask, LoadImageSetFromFolderNode, SaveImage, PreviewImage,
    ImageBatch, ImageScale, ImageScaleBy, ImageInvert, InvertMask, MaskToImage, ImageToMask,
    PrimitiveString, PrimitiveStringMultiline, PrimitiveInt, PrimitiveFloat, PrimitiveBoolean,
)}
