"""Writes a synthetic artifact dataset in PAL4VST's layout, from clean images and `pal_core.train.artifacts`.

    OUT/images/train/mixed/NNNNNN.png   512x512 RGB, 0..N artifacts of any kind (a share are clean)
    OUT/labels/train/mixed/NNNNNN.png   0/1 label PNG (1 = artifact), as PAL4VST's labels
    OUT/images/val/<kind>/...           held-out sources, one artifact kind per folder, plus val/clean/
    OUT/clean_holdout/<name>.png        the held-out clean images themselves (for the clean-PAR floor)
    OUT/manifest.json                   what was made, from what, with which seed

Images are made at the detector's input size (512): the network sees artifacts at the scale it will
meet them, since every image is resized to 512x512 before inference. Each sample's randomness comes
from (seed, split, index) alone, so any sample can be regenerated and workers do not matter.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

from .. import atomic
from ..imageio import write_png
from .artifacts import ARTIFACT_KINDS, synthesize
from .clean_sources import CleanImage

SIZE = 512


@dataclass(frozen=True)
class SyntheticConfig:
    train_samples: int = 4000
    val_per_kind: int = 24
    val_clean: int = 48
    clean_share: float = 0.3  # samples left without artifacts: clean images must score about zero
    # Samples drawn from real photos rather than generated stills (photos are ~15% of the sources):
    # dense natural texture is where false positives come from, so it is shown more often than its
    # share of the sources, clean and with artifacts alike (the photo pick does not depend on cleanness).
    photo_share: float = 0.35
    # Samples given a global camera / encoder look first (grain, sharpening, softness, tone): the whole
    # image changes, nothing is labelled, so the detector learns that only local defects count.
    global_look_share: float = 0.3
    max_regions: int = 4
    jpeg_share: float = 0.35  # samples re-encoded as JPEG afterwards, as generated images often are
    jpeg_quality: tuple[int, int] = (55, 95)
    seed: int = 0
    size: int = SIZE  # side of the square samples: the detector's input size


def random_view(image: np.ndarray, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A random crop (65-100% of the short side, aspect 0.8-1.25) with random flip, resized to size x size."""
    h, w = image.shape[:2]
    side = min(h, w) * rng.uniform(0.65, 1.0)
    aspect = rng.uniform(0.8, 1.25)
    ch, cw = int(min(h, side * aspect)), int(min(w, side / aspect))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = Image.fromarray(image[y:y + ch, x:x + cw]).resize((size, size), Image.BICUBIC)
    view = np.asarray(crop)
    return np.ascontiguousarray(view[:, ::-1]) if rng.random() < 0.5 else view


def whole_view(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The whole image at size x size, as the detector's preprocessing sees it (aspect ignored)."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def reencode_jpeg(image: np.ndarray, rng: np.random.Generator, quality: tuple[int, int]) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def global_look(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The whole image with one camera / pipeline trait: film grain, sharpening halos, softness or a tone curve.

    Applied before artifacts and left unlabelled: such traits are uniform over a picture, while the
    artifacts the detector must find are local (a patch unlike its surroundings).
    """
    work = image.astype(np.float32)
    choice = rng.integers(0, 4)
    if choice == 0:  # sensor grain, luminance or colour
        sigma = rng.uniform(2.0, 7.0)
        shape = work.shape if rng.random() < 0.5 else work.shape[:2] + (1,)
        work = work + rng.normal(0, sigma, shape)
    elif choice == 1:  # unsharp mask, as cameras and phones apply it
        blurred = cv2.GaussianBlur(work, (0, 0), rng.uniform(0.8, 2.0))
        work = work + rng.uniform(0.4, 1.5) * (work - blurred)
    elif choice == 2:  # slight softness (lens, resampling)
        work = cv2.GaussianBlur(work, (0, 0), rng.uniform(0.5, 1.2))
    else:  # tone: gamma and contrast
        work = 255.0 * (work / 255.0) ** rng.uniform(0.7, 1.4)
        work = (work - 128.0) * rng.uniform(0.8, 1.25) + 128.0
    return np.clip(np.rint(work), 0, 255).astype(np.uint8)


@dataclass
class SourcePool:
    """The clean images of one split, photos kept apart from generated stills so each can be weighted."""
    stills: list[np.ndarray]
    photos: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.stills) + len(self.photos)

    def pick(self, rng: np.random.Generator, photo_share: float) -> np.ndarray:
        use_photos = rng.random() < photo_share
        group = (self.photos if use_photos else self.stills) or self.stills or self.photos
        return group[int(rng.integers(0, len(group)))]


# ----------------------------------------------------------------------------------------------
# One sample


@dataclass(frozen=True)
class SampleSpec:
    split: str  # "train" or "val"
    folder: str  # task folder: "mixed", a kind name, or "clean"
    index: int
    kind: str | None  # None: any kinds (train); "clean": no artifacts


_SOURCES: dict[str, SourcePool] = {}


def _init_worker(sources: dict[str, SourcePool]) -> None:
    _SOURCES.clear()
    _SOURCES.update(sources)


def make_sample(spec: SampleSpec, config: SyntheticConfig, sources: dict[str, SourcePool]
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(image, 0/1 label, kinds) for one sample; deterministic in (config.seed, split, index)."""
    rng = np.random.default_rng([config.seed, 0 if spec.split == "train" else 1, spec.index])
    pool = sources["train" if spec.split == "train" else "holdout"]
    image = random_view(pool.pick(rng, config.photo_share), rng, config.size)
    if rng.random() < config.global_look_share:
        image = global_look(image, rng)
    label, kinds = np.zeros(image.shape[:2], bool), []
    clean = spec.kind == "clean" or (spec.kind is None and rng.random() < config.clean_share)
    if not clean:
        donor = random_view(pool.pick(rng, config.photo_share), rng, config.size)
        chosen = ARTIFACT_KINDS if spec.kind is None else tuple(k for k in ARTIFACT_KINDS if k.name == spec.kind)
        regions = config.max_regions if spec.kind is None else 2
        for _ in range(4):  # an image meant to have artifacts gets at least one
            image_out, label, kinds = synthesize(image, rng, regions, donor=donor, kinds=chosen)
            if kinds:
                image = image_out
                break
    if rng.random() < config.jpeg_share:
        image = reencode_jpeg(image, rng, config.jpeg_quality)
    return image, label.astype(np.uint8), kinds


def _write_sample(args: tuple[SampleSpec, SyntheticConfig, str]) -> dict:
    spec, config, out = args
    image, label, kinds = make_sample(spec, config, _SOURCES)
    name = f"{spec.index:06d}.png"
    write_png(Path(out) / "images" / spec.split / spec.folder / name, image, overwrite=True)
    write_png(Path(out) / "labels" / spec.split / spec.folder / name, label, overwrite=True)
    return {"file": f"{spec.split}/{spec.folder}/{name}", "kinds": kinds, "artifact_fraction": float(label.mean())}


def sample_specs(config: SyntheticConfig) -> Iterator[SampleSpec]:
    for i in range(config.train_samples):
        yield SampleSpec("train", "mixed", i, None)
    index = 0
    for kind in ARTIFACT_KINDS:
        for _ in range(config.val_per_kind):
            yield SampleSpec("val", kind.name, index, kind.name)
            index += 1
    for _ in range(config.val_clean):
        yield SampleSpec("val", "clean", index, "clean")
        index += 1


def load_sources(images: list[CleanImage]) -> dict[str, SourcePool]:
    """Decoded clean images by split; large ones are shrunk to a 768 short side to save memory."""
    sources = {"train": SourcePool([], []), "holdout": SourcePool([], [])}
    for item in images:
        array = item.load()
        short = min(array.shape[:2])
        if short > 768:
            scale = 768 / short
            array = np.asarray(Image.fromarray(array).resize(
                (round(array.shape[1] * scale), round(array.shape[0] * scale)), Image.LANCZOS))
        pool = sources[item.split]
        (pool.photos if item.is_photo else pool.stills).append(array)
    if not sources["train"] or not sources["holdout"]:
        raise ValueError(f"need clean images on both sides of the split; have {len(sources['train'])} for "
                         f"training and {len(sources['holdout'])} held out")
    return sources


def generate_dataset(images: list[CleanImage], out: str | os.PathLike, config: SyntheticConfig = SyntheticConfig(),
                     workers: int = 1, overwrite: bool = False, progress: bool = True) -> dict:
    """Writes the whole dataset under `out` and returns its manifest."""
    out = Path(out)
    if (out / "manifest.json").exists() or (out / "images").exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a dataset; choose another --out or pass --overwrite")
    sources = load_sources(images)
    for item in images:
        if item.split == "holdout":
            write_png(out / "clean_holdout" / f"{item.name}.png", whole_view(item.load(), config.size),
                      overwrite=overwrite)
    specs = list(sample_specs(config))
    jobs = [(spec, config, str(out)) for spec in specs]
    if workers > 1:
        with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(
                workers, initializer=_init_worker, initargs=(sources,)) as pool:
            records = list(_progress(pool.imap(_write_sample, jobs, chunksize=8), len(jobs), progress))
    else:
        _init_worker(sources)
        records = list(_progress(map(_write_sample, jobs), len(jobs), progress))
    manifest = {
        "config": asdict(config),
        "sources": {"train": sorted(i.name for i in images if i.split == "train"),
                    "holdout": sorted(i.name for i in images if i.split == "holdout")},
        "kinds": [k.name for k in ARTIFACT_KINDS],
        "samples": records,
    }
    atomic.write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc="synthesising", unit="img")
