"""Reading images into ComfyUI's layout and writing results without ever losing a file.

Reading: JPEG, PNG, WebP (anything Pillow reads), 8- and 16-bit, grey, palette, RGBA; EXIF rotation is
applied so masks line up with the image as viewers show it. An image larger than a pixel limit
(80 megapixels; $PAL_MAX_IMAGE_PIXELS changes it) is refused from its header, before any decoding:
a PNG of a few hundred kilobytes can decode to gigabytes. Writing: PNG through a temporary file
renamed into place, and an existing file is only replaced when the caller says so.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from .atomic import atomic_path, exists_message

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}

# The official visualisation: artifact pixels blended 30% towards magenta.
OVERLAY_COLOR = (1.0, 0.0, 1.0)
OVERLAY_ALPHA = 0.3


MAX_PIXELS_ENV = "PAL_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 80_000_000  # 8944 x 8944; a 4x upscale of a 2048 x 2048 image is 67 M


class ImageReadError(ValueError):
    """An image file that is missing, unreadable, too large, or of an unsupported kind."""


def max_image_pixels() -> int:
    """The largest image (width x height, all frames together) that is decoded: $PAL_MAX_IMAGE_PIXELS or 80 M."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(value))
    except (ValueError, OverflowError):
        raise ImageReadError(f"${MAX_PIXELS_ENV} must be a number of pixels, not {value!r}") from None
    if limit < 1:
        raise ImageReadError(f"${MAX_PIXELS_ENV} must be at least 1, not {value!r}")
    return limit


@contextmanager
def open_image(path: str | os.PathLike, frames: int = 1) -> Iterator[Image.Image]:
    """Pillow's image, opened lazily, once its header shows it is within the pixel limit.

    Every error of opening or decoding inside the block becomes an ImageReadError naming the file.
    `frames`: how many frames the caller will decode (they count towards the limit together).
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():  # our own limit decides, below; Pillow's warning would only be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                count = frames if frames > 0 else (1 if img.format == "MPO" else getattr(img, "n_frames", 1))
                if width * height * count > limit:
                    raise ImageReadError(
                        f"{path}: {width}x{height} pixels{f' x {count} frames' if count > 1 else ''} is more than "
                        f"the limit of {limit:,} pixels (a file this size decodes to "
                        f"{width * height * count * 12 / 1e9:.1f} GB). Downscale it, or raise the limit with "
                        f"{MAX_PIXELS_ENV}=N if you have the memory")
                yield img
    except ImageReadError:
        raise
    except Image.DecompressionBombError as error:  # beyond Pillow's own hard limit, found when opening
        raise ImageReadError(f"{path}: more than the limit of {limit:,} pixels, a decompression bomb ({error}). "
                             "Downscale it first") from None
    except UnidentifiedImageError as error:
        raise ImageReadError(f"{path}: not an image Pillow can read (corrupt, or an unsupported format)") from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated or damaged files
        raise ImageReadError(f"{path}: could not be decoded ({error})") from error
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode it; lower {MAX_PIXELS_ENV}") from None


def read_image(path: str | os.PathLike, with_alpha: bool = False):
    """Float tensor [H, W, 3] in 0..1 (and, with `with_alpha`, the alpha [H, W] or None)."""
    with open_image(path) as img:
        rgb, alpha = _to_float_rgb(ImageOps.exif_transpose(img))
    image = torch.from_numpy(rgb)
    if with_alpha:
        return image, (torch.from_numpy(alpha) if alpha is not None else None)
    return image


def _to_float_rgb(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    alpha = None
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit (or 32-bit int) greyscale
        grey = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if grey.max(initial=0) <= 65535 else float(grey.max())
        grey = (grey / scale).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2), None
    if img.mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2), None
    if "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, alpha


def list_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and the image files inside folders (recursively, sorted)."""
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(item)
    return found


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[H, W, C] or [H, W] float in 0..1 -> uint8 array (rounded)."""
    return (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu().numpy()


def write_png(path: str | os.PathLike, image: torch.Tensor | np.ndarray, overwrite: bool = False,
              text: dict[str, str] | None = None, compress_level: int = 6) -> Path:
    """Writes a PNG atomically. `image`: float [H, W(, 3)] in 0..1 or a uint8 array.

    `text`: PNG text chunks (ComfyUI stores the workflow this way). Without `overwrite`, an existing
    file is never replaced, even one created by another process while this one was writing.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(exists_message(path))
    array = to_uint8(image) if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.uint8)
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    with atomic_path(path, overwrite) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", pnginfo=info, compress_level=compress_level)
    return path


def read_frames(path: str | os.PathLike) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Every frame of an animated image (GIF, APNG, WebP, multi-page TIFF) as (rgb [H, W, 3], alpha or None).

    A still image gives one frame. EXIF rotation is applied to each frame. An MPO file (a JPEG with
    extra pictures such as a preview or a stereo pair) gives only its main picture.
    """
    frames = []
    with open_image(path, frames=0) as img:
        count = 1 if img.format == "MPO" else getattr(img, "n_frames", 1)
        for index in range(count):
            img.seek(index)
            rgb, alpha = _to_float_rgb(ImageOps.exif_transpose(img))
            frames.append((torch.from_numpy(rgb), torch.from_numpy(alpha) if alpha is not None else None))
    return frames


def overlay(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image with artifact pixels tinted magenta, as the official PAL4VST visualisation does.

    image: [..., H, W, 3] float in 0..1; mask: [..., H, W] (0/1 or soft in 0..1).
    """
    weight = mask.to(image.dtype).unsqueeze(-1) * OVERLAY_ALPHA
    color = torch.tensor(OVERLAY_COLOR, dtype=image.dtype, device=image.device)
    return image * (1 - weight) + color * weight
