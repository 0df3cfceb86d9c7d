"""Writes the pack's registry icon (pyproject.toml [tool.comfy] Icon): the example dog with its synthetic
artifacts as the shipped detector sees them, tinted magenta, cropped square and scaled to 400x400 (the
Comfy registry shows icons square).

    python tools/make_icon.py             # refuses to replace docs/images/icon.png
    python tools/make_icon.py --overwrite
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pal_core import load_detector
from pal_core.detect.masks import DEFAULT_THRESHOLD, binarize
from pal_core.imageio import overlay, read_image, to_uint8, write_png

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "workflows" / "input" / "dog_synthetic_artifacts.jpg"
ICON = ROOT / "docs" / "images" / "icon.png"
SIZE = 400


def icon_image() -> Image.Image:
    image = read_image(SOURCE)
    detector = load_detector(None, device="cpu", dtype="fp32")  # the shipped default: pal-lite here
    with torch.no_grad():
        probability = detector.predict(image[None], threshold=DEFAULT_THRESHOLD)
    tinted = overlay(image[None], binarize(probability, DEFAULT_THRESHOLD).float())[0]
    picture = Image.fromarray(to_uint8(tinted))
    side = min(picture.size)
    left, top = (picture.width - side) // 2, (picture.height - side) // 2
    return picture.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    ICON.parent.mkdir(parents=True, exist_ok=True)
    write_png(ICON, np.asarray(icon_image()), overwrite=args.overwrite)
    print(f"wrote {ICON}")


if __name__ == "__main__":
    main()
