"""How well each weight-free inpainter restores an artifact region, measured against the clean original.

    python benchmarks/inpaint.py [--images 3] [--kinds K ...] [--sizes 0.005 0.02 0.06] [--methods M ...]

Needs the train extra (`pip install -e '.[train]'`: the clean source images) and, for the xphoto
methods, opencv-contrib (see the README). The synthetic-artifact generator (`pal_core.train.artifacts`)
damages clean held-out images with a fixed set of kinds and sizes, which gives the exact mask and
the clean original. Each inpainter then repairs the damage the way `pal fix` does (the mask as the
detector's verdict: dilated, cropped square at 1.5x, zoomed to 512, inpainted, blended back), and is
scored inside the artifact mask:

- PSNR and SSIM of the result against the clean original (the "no fix" row is the damaged image);
- the artifact pixels the shipped detector finds in the regions' crop boxes after the fix, against
  before it (and on the clean original: the detector's floor), and the share of regions whose fix
  `pal fix` would keep (fewer artifact pixels than before);
- CPU seconds per 512x512 crop (process time, so other jobs on a shared machine inflate it less).
"""

from __future__ import annotations

import argparse
import math
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from pal_core import load_detector
from pal_core.refinement.crops import clip_box
from pal_core.refinement.inpaint_quality import masked_psnr, masked_ssim, repaint
from pal_core.refinement.inpainters import Inpainter, available_weight_free, make_inpainter
from pal_core.train.artifacts import ARTIFACT_KINDS, apply_artifact, detailed_point, random_region, random_stroke_region
from pal_core.train.clean_sources import find_clean_images
from pal_core.train.synthetic_data import whole_view

KINDS = ("inpaint_smear", "melted_warp", "colour_blotch", "garbled_structure", "broken_lines")
SIZES = (0.005, 0.02, 0.06)  # artifact area / image area (a broken line is as long as it is)
SIDE = 512


@dataclass
class Case:
    name: str
    kind: str
    size: float | None  # None for strokes (a broken line is as long as it is)
    clean: np.ndarray
    damaged: np.ndarray
    mask: np.ndarray


class NoFix(Inpainter):
    """Returns the crops unchanged: scores the damaged image itself."""

    name = "no fix (damaged)"

    def _inpaint(self, crops, masks, prompts, seeds):
        return crops.clone()


class Biharmonic(Inpainter):
    """scikit-image's biharmonic inpainting (a smooth fill like Navier-Stokes): compared here only."""

    name = "skimage-biharmonic"

    def _inpaint(self, crops, masks, prompts, seeds):
        from skimage.restoration import inpaint_biharmonic

        filled = [inpaint_biharmonic(crop.double().numpy(), (mask > 0.5).numpy(), channel_axis=-1)
                  for crop, mask in zip(crops.cpu(), masks.cpu())]
        result = torch.from_numpy(np.stack(filled)).to(crops.dtype).clamp(0, 1)
        return torch.where((masks > 0.5).unsqueeze(-1), result, crops)


def make(spec: str) -> Inpainter:
    if spec == "no fix":
        return NoFix()
    if spec == Biharmonic.name:
        return Biharmonic()
    return make_inpainter(spec)


class Timed(Inpainter):
    """Wraps an inpainter and adds up the CPU time it takes and the crops it is given."""

    def __init__(self, inner: Inpainter):
        self.inner, self.name, self.multiple = inner, inner.name, inner.multiple
        self.seconds, self.crops = 0.0, 0

    def _inpaint(self, crops, masks, prompts, seeds):
        start = time.process_time()
        result = self.inner.inpaint(crops, masks, prompts, seeds)
        self.seconds += time.process_time() - start
        self.crops += crops.shape[0]
        return result


@dataclass
class Scores:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    px_before: int = 0
    px_after: int = 0
    px_clean: int = 0
    regions: int = 0
    kept: int = 0


def clean_images(count: int) -> list[tuple[str, np.ndarray]]:
    """`count` held-out images (never trained on), one real photo among them, whole, at 512x512."""
    holdout = [c for c in find_clean_images() if c.split == "holdout"]
    photos = [c for c in holdout if c.is_photo][:1]
    chosen = [c for c in holdout if not c.is_photo][:max(0, count - len(photos))] + photos
    return [(c.name, whole_view(c.load(), SIDE)) for c in chosen[:count]]


def make_cases(images: list[tuple[str, np.ndarray]], kinds: tuple[str, ...], sizes: tuple[float, ...]) -> list[Case]:
    by_name = {k.name: k for k in ARTIFACT_KINDS}
    cases = []
    for name, image in images:
        for kind_name in kinds:
            kind = by_name[kind_name]
            for size in (sizes if kind.region == "blob" else sizes[:1]):
                rng = np.random.default_rng(zlib.crc32(f"{name}/{kind_name}/{size}".encode()))
                for _attempt in range(8):  # an invisible edit (flat area) is redrawn elsewhere
                    region = (random_stroke_region(image.shape[:2], rng) if kind.region == "stroke"
                              else random_region(image.shape[:2], size, rng, detailed_point(image, rng)))
                    edited = apply_artifact(image, region, kind, rng)
                    if edited is not None and edited[1].any():
                        cases.append(Case(name, kind_name, size if kind.region == "blob" else None, image, *edited))
                        break
    return cases


def artifact_pixels(mask: torch.Tensor, boxes) -> int:
    covered = torch.zeros_like(mask)
    for box in boxes:
        x0, y0, x1, y1 = clip_box(box, *mask.shape)
        covered[y0:y1, x0:x1] = True
    return int((mask & covered).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=[k.name for k in ARTIFACT_KINDS])
    parser.add_argument("--sizes", nargs="+", type=float, default=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=None,
                        help="inpainter specs, or skimage-biharmonic (default: every weight-free one this OpenCV has, "
                             "but opencv-fsr-best, which takes tens of seconds a crop)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the detector")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    methods = args.methods or [m for m in available_weight_free() if m != "opencv-fsr-best"]
    cases = make_cases(clean_images(args.images), tuple(args.kinds), tuple(args.sizes))
    detector = load_detector(device="cpu")

    def detect(image: np.ndarray) -> torch.Tensor:
        return detector.mask([torch.from_numpy(image).float() / 255.0])[0]

    before = [(detect(c.clean), detect(c.damaged)) for c in cases]
    table: dict[str, Scores] = {}
    by_kind: dict[tuple[str, str], list[float]] = {}
    by_size: dict[tuple[str, float], list[float]] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for spec in ["no fix", *methods]:
        inpainter = Timed(make(spec))
        scores = table.setdefault(inpainter.name, Scores())
        for case, (on_clean, on_damaged) in zip(cases, before):
            result, details = repaint(case.damaged, case.mask, inpainter)
            psnr = masked_psnr(result, case.clean, case.mask)
            scores.psnr.append(psnr)
            scores.ssim.append(masked_ssim(result, case.clean, case.mask))
            by_kind.setdefault((inpainter.name, case.kind), []).append(psnr)
            if case.size is not None:
                by_size.setdefault((inpainter.name, case.size), []).append(psnr)
            on_result = detect(result)
            boxes = [r.box for r in details.plan.regions]
            scores.px_clean += artifact_pixels(on_clean, boxes)
            scores.px_before += artifact_pixels(on_damaged, boxes)
            scores.px_after += artifact_pixels(on_result, boxes)
            for box in boxes:
                scores.regions += 1
                scores.kept += artifact_pixels(on_result, [box]) < artifact_pixels(on_damaged, [box])
        seconds[inpainter.name] = inpainter.seconds / max(inpainter.crops, 1)

    names = list(table)
    kinds = sorted({c.kind for c in cases})
    sizes = sorted({c.size for c in cases if c.size is not None})
    print(f"{len(cases)} cases: {args.images} held-out images at {SIDE}x{SIDE} x kinds {', '.join(kinds)} x sizes "
          f"{', '.join(f'{s:.1%}' for s in sizes)} (broken_lines: one stroke each); torch threads {args.threads}; "
          f"{time.perf_counter() - start:.0f} s wall in all")
    print()
    print("| inpainter | PSNR in mask (dB) | SSIM in mask | artifact px after / before fix (clean) | fixes pal fix keeps "
          "| CPU s per 512 crop |")
    print("|---|---|---|---|---|---|")
    for name in names:
        s = table[name]
        print(f"| {name} | {_mean(s.psnr):.2f} | {_mean(s.ssim):.3f} | {s.px_after} / {s.px_before} ({s.px_clean}) "
              f"| {s.kept}/{s.regions} | {'-' if name.startswith('no fix') else f'{seconds[name]:.3f}'} |")
    print()
    print("PSNR in mask (dB) by kind and size:")
    print()
    print("| inpainter | " + " | ".join(kinds) + " | " + " | ".join(f"{s:.1%}" for s in sizes) + " |")
    print("|---|" + "---|" * (len(kinds) + len(sizes)))
    for name in names:
        cells = [_mean(by_kind.get((name, k), [])) for k in kinds] + [_mean(by_size.get((name, s), [])) for s in sizes]
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


if __name__ == "__main__":
    main()
