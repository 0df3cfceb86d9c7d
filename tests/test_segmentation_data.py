"""PAL4VST layout reading: labels in 0/1 and 0/255, clear errors, crops padded with ignored pixels."""

import numpy as np
import pytest
from PIL import Image

from pal_core.train.segmentation_data import (IGNORE_INDEX, CropSettings, DatasetLayoutError, list_samples, random_crop,
                                              read_label)


def test_labels_in_both_conventions(tmp_path):
    for name, high in (("a.png", 1), ("b.png", 255)):
        values = np.zeros((4, 4), np.uint8)
        values[1, 2] = high
        Image.fromarray(values).save(tmp_path / name)
        label = read_label(tmp_path / name)
        assert label.dtype == np.uint8 and label.sum() == 1 and label[1, 2] == 1


def test_other_label_values_are_refused(tmp_path):
    Image.fromarray(np.array([[0, 7]], np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(DatasetLayoutError, match="expected 0/1"):
        read_label(tmp_path / "bad.png")


def test_missing_split_and_missing_label(tmp_path):
    with pytest.raises(DatasetLayoutError, match="images/train"):
        list_samples(tmp_path, "train")
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "labels/train").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images/train/x.jpg")
    with pytest.raises(DatasetLayoutError, match="no label PNG"):
        list_samples(tmp_path, "train")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels/train/x.png")
    [sample] = list_samples(tmp_path, "train")
    assert sample.task == "all"


def test_crop_pads_with_ignored_label():
    image = np.full((20, 30, 3), 9, np.uint8)
    label = np.ones((20, 30), np.uint8)
    crop_image, crop_label = random_crop(image, label, CropSettings(40, (1.0, 1.0), flip=False),
                                         np.random.default_rng(0))
    assert crop_image.shape == (40, 40, 3) and crop_label.shape == (40, 40)
    assert (crop_label[:20, :30] == 1).all()
    assert (crop_label[20:] == IGNORE_INDEX).all() and (crop_label[:, 30:] == IGNORE_INDEX).all()
    assert (crop_image[20:] == 0).all()
