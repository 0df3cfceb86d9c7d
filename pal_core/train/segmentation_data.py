"""Reading PAL4VST-layout segmentation data, and the random crops a detector is trained on.

Layout (PAL4VST's, mmsegmentation's):  DATA/images/<split>/[<task>/]NAME.(png|jpg|...)
                                       DATA/labels/<split>/[<task>/]NAME.png
A label is a greyscale PNG whose pixels are 0 (fine) and 1 (artifact), as the official release stores
them, or 0 and 255 (as many users re-save them); anything else is refused with the file named.
The first folder level under a split is the task (PAL4VST's test set is grouped by synthesis task);
images directly in the split belong to the task "all".

Images are brought to the detector's input size first (512x512, bicubic, aspect ignored), exactly as
`Preprocess` does at inference, and only then scaled and cropped at random: what the network learns
from is what it sees when it runs.

A target is either a class label (uint8 0/1, IGNORE_INDEX where nothing counts: resized by nearest
neighbour) or a soft artifact probability (float32 in 0..1, NaN where nothing counts: resized
linearly), as distillation learns from a teacher's probabilities (`pal_core.train.distillation`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from PIL import Image

from ..detect.preprocess import Preprocess
from ..imageio import IMAGE_SUFFIXES

IGNORE_INDEX = 255  # label value of padding: no loss, no metric
ROOT_TASK = "all"


class DatasetLayoutError(ValueError):
    """A data folder that is not in PAL4VST's images/<split>, labels/<split> layout, or a bad label."""


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path
    task: str


def list_samples(root: str | os.PathLike, split: str) -> list[Sample]:
    """Image/label pairs of one split, sorted; every image must have its label."""
    root = Path(root)
    images_dir, labels_dir = root / "images" / split, root / "labels" / split
    if not images_dir.is_dir():
        present = sorted(p.name for p in (root / "images").iterdir()) if (root / "images").is_dir() else []
        raise DatasetLayoutError(
            f"{images_dir} not found. Expected PAL4VST's layout: {root}/images/<split>/ and {root}/labels/<split>/ "
            f"(splits here: {', '.join(present) or 'none'})")
    samples, missing = [], []
    for image in sorted(p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        relative = image.relative_to(images_dir)
        label = labels_dir / relative.with_suffix(".png")
        if not label.is_file():
            missing.append(str(relative))
            continue
        task = relative.parts[0] if len(relative.parts) > 1 else ROOT_TASK
        samples.append(Sample(image, label, task))
    if missing:
        raise DatasetLayoutError(f"{len(missing)} images in {images_dir} have no label PNG in {labels_dir} "
                                 f"(e.g. {missing[0]} -> {Path(missing[0]).with_suffix('.png')})")
    if not samples:
        raise DatasetLayoutError(f"no images in {images_dir}")
    return samples


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label PNG as uint8 0/1 [H, W]; accepts 0/1 and 0/255 files."""
    with Image.open(path) as img:
        if img.mode not in ("L", "P", "1", "I", "I;16"):
            img = img.convert("L")
        values = np.asarray(img)
    if values.ndim != 2:
        raise DatasetLayoutError(f"{path}: a label must be single-channel, got shape {values.shape}")
    present = np.unique(values)
    if set(present.tolist()) <= {0, 1}:
        return values.astype(np.uint8)
    if set(present.tolist()) <= {0, 255}:
        return (values == 255).astype(np.uint8)
    raise DatasetLayoutError(f"{path}: label values {present[:10].tolist()}; expected 0/1 (PAL4VST) or 0/255 "
                             "(1 or 255 = artifact)")


def read_sample_label(sample: Sample) -> np.ndarray:
    return read_label(sample.label)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _is_soft(target: np.ndarray) -> bool:
    return target.dtype.kind == "f"


def resize_target(target: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label by nearest neighbour (classes do not blend), a soft target linearly; size is (width, height)."""
    return cv2.resize(target, size, interpolation=cv2.INTER_LINEAR if _is_soft(target) else cv2.INTER_NEAREST)


def to_input_size(image: np.ndarray, label: np.ndarray, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Image resized as the detector's preprocessing does (PIL bicubic), its target to the same size."""
    if size is None or (image.shape[:2] == (size, size) and label.shape == (size, size)):
        return image, label
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return image, resize_target(label, (size, size))


def normalise(image: np.ndarray, preprocess: Preprocess) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] with the detector's mean and std."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)  # a copy: PIL arrays are read-only
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class CropSettings:
    crop_size: int = 320
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip: bool = True


def random_crop(image: np.ndarray, label: np.ndarray, settings: CropSettings, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """Random rescale, random crop (padded with ignored pixels when smaller), random horizontal flip."""
    scale = rng.uniform(*settings.scale_range)
    if abs(scale - 1.0) > 1e-3:
        h, w = image.shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        label = resize_target(label, size)
    c = settings.crop_size
    h, w = label.shape
    if h < c or w < c:
        pad_h, pad_w = max(0, c - h), max(0, c - w)
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=np.nan if _is_soft(label) else IGNORE_INDEX)
        h, w = label.shape
    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    image, label = image[y:y + c, x:x + c], label[y:y + c, x:x + c]
    if settings.flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


class TrainingCrops(torch.utils.data.Dataset):
    """Item `position` of an endless, seeded stream of random crops: epoch e visits the samples in a
    permutation fixed by (seed, e). Resuming at step s reads positions from s * batch_size on and so
    sees exactly what an uninterrupted run would have seen."""

    def __init__(self, samples: list[Sample], preprocess: Preprocess, settings: CropSettings, seed: int = 0,
                 read_target: Callable[[Sample], np.ndarray] | None = None):
        self.samples = samples
        self.preprocess = preprocess
        self.settings = settings
        self.seed = seed
        self.read_target = read_target or read_sample_label
        self._order_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:  # positions are unbounded; a sampler chooses them
        return 2 ** 62

    def sample_for(self, position: int) -> Sample:
        epoch, offset = divmod(position, len(self.samples))
        if self._order_cache is None or self._order_cache[0] != epoch:
            self._order_cache = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.samples)))
        return self.samples[int(self._order_cache[1][offset])]

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.sample_for(position)
        rng = np.random.default_rng([self.seed, 1, position])
        image, label = to_input_size(read_rgb(sample.image), self.read_target(sample), self.preprocess.input_size)
        image, label = random_crop(image, label, self.settings, rng)
        return normalise(image, self.preprocess), torch.from_numpy(label.astype(np.float32 if _is_soft(label) else np.int64))


class PositionSampler(torch.utils.data.Sampler):
    """Positions start..stop-1 of the crop stream, in order."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class WholeImages(torch.utils.data.Dataset):
    """Validation: each sample whole, at the detector's input size, with its task."""

    def __init__(self, samples: list[Sample], preprocess: Preprocess):
        self.samples = samples
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index]
        image, label = to_input_size(read_rgb(sample.image), read_label(sample.label), self.preprocess.input_size)
        return normalise(image, self.preprocess), torch.from_numpy(label.astype(np.int64))
