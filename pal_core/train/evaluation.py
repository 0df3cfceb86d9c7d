"""PAL4VST's metrics: IoU of the artifact class, and mIoU over (background, artifact), per task.

As in mmsegmentation (the paper's toolkit), intersections and unions are summed over all pixels of a
task's images before dividing: big and small images weigh by their pixels, and an image with no
artifact and no prediction adds nothing to the artifact IoU. The paper's Table 1 reports these per
synthesis task (one folder per task in the test split).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import atomic
from ..detect.masks import DEFAULT_THRESHOLD
from .segmentation_data import IGNORE_INDEX, list_samples, read_label, read_rgb


@dataclass
class PixelCounts:
    """Confusion counts of the artifact class (ignored pixels excluded)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    images: int = 0
    clean_images: int = 0  # images whose label has no artifact
    clean_predicted: float = 0.0  # sum over clean images of the predicted artifact fraction

    def add(self, prediction: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        """prediction: bool/0-1 [H, W]; label: 0/1 with IGNORE_INDEX for pixels that do not count."""
        prediction = torch.as_tensor(prediction).bool()
        label = torch.as_tensor(label)
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in size")
        valid = label != IGNORE_INDEX
        truth = (label == 1) & valid
        pred = prediction & valid
        self.tp += int((pred & truth).sum())
        self.fp += int((pred & ~truth).sum())
        self.fn += int((~pred & truth).sum())
        self.tn += int((~pred & ~truth & valid).sum())
        self.images += 1
        if not bool(truth.any()):
            self.clean_images += 1
            self.clean_predicted += float(pred.sum()) / max(1, int(valid.sum()))

    def merge(self, other: "PixelCounts") -> None:
        for name in ("tp", "fp", "fn", "tn", "images", "clean_images", "clean_predicted"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def artifact_iou(self) -> float:
        union = self.tp + self.fp + self.fn
        return self.tp / union if union else float("nan")

    @property
    def background_iou(self) -> float:
        union = self.tn + self.fp + self.fn
        return self.tn / union if union else float("nan")

    @property
    def miou(self) -> float:
        values = [v for v in (self.artifact_iou, self.background_iou) if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    @property
    def clean_par(self) -> float:
        """Mean predicted artifact ratio over images that have no artifact (PAR on clean images)."""
        return self.clean_predicted / self.clean_images if self.clean_images else float("nan")

    def summary(self) -> dict:
        return {"artifact_iou": self.artifact_iou, "background_iou": self.background_iou, "miou": self.miou,
                "images": self.images, "clean_images": self.clean_images, "clean_par": self.clean_par,
                "pixels": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}}


@dataclass
class EvaluationResult:
    model: str
    split: str
    threshold: float
    tasks: dict[str, PixelCounts] = field(default_factory=dict)

    @property
    def overall(self) -> PixelCounts:
        total = PixelCounts()
        for counts in self.tasks.values():
            total.merge(counts)
        return total

    def to_dict(self) -> dict:
        return {"model": self.model, "split": self.split, "threshold": self.threshold,
                "tasks": {name: c.summary() for name, c in sorted(self.tasks.items())},
                "overall": self.overall.summary()}

    def table(self) -> str:
        """Table 1's layout: one row per model, one column per task, then the overall; IoU / mIoU in %."""
        names = sorted(self.tasks)
        columns = names + ["overall"]
        counts = [self.tasks[n] for n in names] + [self.overall]
        width = max(12, *(len(c) for c in columns))

        def cell(value: float) -> str:
            return f"{'-' if np.isnan(value) else f'{100 * value:.1f}':>{width}}"

        lines = [f"{'':<18}" + "".join(f"{c:>{width}}" for c in columns),
                 f"{'IoU (artifact)':<18}" + "".join(cell(c.artifact_iou) for c in counts),
                 f"{'mIoU':<18}" + "".join(cell(c.miou) for c in counts),
                 f"{'clean PAR':<18}" + "".join(cell(c.clean_par) for c in counts),
                 f"{'images':<18}" + "".join(f"{c.images:>{width}}" for c in counts)]
        return f"model: {self.model}   split: {self.split}   threshold: {self.threshold}\n" + "\n".join(lines)


def evaluate_detector(detector, data: str | os.PathLike, split: str = "test", threshold: float = DEFAULT_THRESHOLD,
                      progress: bool = True) -> EvaluationResult:
    """Runs `detector` on every image of `split` and counts pixels against the labels, per task.

    Predictions come from `detector.mask` at each image's own size (the detector resizes to its input
    size and back); a label of another size than its image is compared after nearest resizing.
    """
    samples = list_samples(data, split)
    result = EvaluationResult(detector.name, split, threshold)
    iterator = samples
    if progress:
        from tqdm import tqdm
        iterator = tqdm(samples, desc=f"evaluating {split}", unit="img")
    for sample in iterator:
        image = torch.from_numpy(np.array(read_rgb(sample.image), dtype=np.float32) / 255.0)
        label = read_label(sample.label)
        mask = detector.mask(image.unsqueeze(0), threshold)[0].cpu()
        if tuple(mask.shape) != label.shape:
            import cv2
            label = cv2.resize(label, (mask.shape[1], mask.shape[0]), interpolation=cv2.INTER_NEAREST)
        result.tasks.setdefault(sample.task, PixelCounts()).add(mask, torch.from_numpy(label))
    return result


def write_json(result: EvaluationResult, path: str | os.PathLike, overwrite: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another --json path or pass --overwrite")
    return atomic.write_text(path, json.dumps(result.to_dict(), indent=2, allow_nan=True), overwrite)
