"""IoU / mIoU / clean PAR, checked on masks whose counts are known by hand."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core.train.evaluation import PixelCounts, evaluate_detector
from pal_core.train.segmentation_data import IGNORE_INDEX


def test_counts_on_hand_made_masks():
    label = torch.zeros(4, 4, dtype=torch.long)
    label[0, :] = 1  # 4 artifact pixels
    prediction = torch.zeros(4, 4, dtype=torch.bool)
    prediction[0, :2] = True  # 2 hits
    prediction[1, 0] = True  # 1 false positive
    counts = PixelCounts()
    counts.add(prediction, label)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (2, 1, 2, 11)
    assert counts.artifact_iou == pytest.approx(2 / 5)
    assert counts.background_iou == pytest.approx(11 / 14)
    assert counts.miou == pytest.approx((2 / 5 + 11 / 14) / 2)
    assert counts.clean_images == 0 and math.isnan(counts.clean_par)


def test_ignored_pixels_do_not_count_and_clean_par():
    label = torch.full((2, 5), IGNORE_INDEX, dtype=torch.long)
    label[:, :4] = 0  # a clean image, 8 valid pixels
    prediction = torch.ones(2, 5, dtype=torch.bool)
    prediction[:, :3] = False  # predicted artifact: 2 valid pixels + 2 ignored
    counts = PixelCounts()
    counts.add(prediction, label)
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (0, 2, 0, 6)
    assert counts.clean_par == pytest.approx(2 / 8)
    assert counts.artifact_iou == 0.0  # nothing to find, 2 pixels wrongly found
    counts.add(torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 1, dtype=torch.long))
    assert counts.artifact_iou == pytest.approx(1 / 3)


def test_pixel_counts_are_summed_over_images_not_averaged():
    a, b = PixelCounts(), PixelCounts()
    big_label = torch.ones(10, 10, dtype=torch.long)
    a.add(torch.ones(10, 10, dtype=torch.bool), big_label)  # IoU 1 on 100 pixels
    b.add(torch.zeros(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.long))  # IoU 0 on 2 pixels
    a.merge(b)
    assert a.artifact_iou == pytest.approx(100 / 102)


class FixedDetector:
    """Predicts the left half of every image as artifact."""

    name = "left-half"

    def mask(self, images, threshold=0.5):
        m = torch.zeros(images.shape[:3], dtype=torch.bool)
        m[:, :, : images.shape[2] // 2] = True
        return m


def test_evaluate_detector_per_task(tmp_path):
    for task, label_value in (("taskA", 1), ("taskB", 255)):
        for i in range(2):
            (tmp_path / "images/test" / task).mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels/test" / task).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"images/test/{task}/{i}.jpg")
            label = np.zeros((8, 8), np.uint8)
            label[:, :4 if task == "taskA" else 2] = label_value  # A: exactly the left half; B: a quarter
            Image.fromarray(label).save(tmp_path / f"labels/test/{task}/{i}.png")
    result = evaluate_detector(FixedDetector(), tmp_path, "test", progress=False)
    assert result.tasks["taskA"].artifact_iou == pytest.approx(1.0)
    assert result.tasks["taskB"].artifact_iou == pytest.approx(0.5)
    assert result.overall.artifact_iou == pytest.approx((64 + 32) / (64 + 64))
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data["tasks"]) == {"taskA", "taskB"}
    assert "taskA" in result.table() and "overall" in result.table()
