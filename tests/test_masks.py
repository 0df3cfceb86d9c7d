"""Mask operations: threshold, official dilation, components, area filters, PAR."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pal_core.detect.masks import (_dilate_torch, binarize, connected_components, dilate, dilate_like_official,
                                   dilation_radius, par)


def test_binarize_is_strictly_above_threshold():
    probability = torch.tensor([[[0.2, 0.5, 0.51]]])
    assert binarize(probability, 0.5).tolist() == [[[False, False, True]]]
    with pytest.raises(ValueError, match="threshold"):
        binarize(probability, 1.0)


def test_official_dilation_matches_opencv_at_512():
    rng = np.random.default_rng(0)
    mask = np.zeros((512, 512), np.uint8)
    for y, x in rng.integers(20, 490, size=(6, 2)):
        mask[y:y + 7, x:x + 3] = 1
    expected = cv2.dilate(mask, np.ones((5, 5), np.uint8), iterations=5)
    ours = dilate_like_official(torch.from_numpy(mask).bool()[None])[0]
    assert torch.equal(ours, torch.from_numpy(expected).bool())


def test_dilation_scales_with_resolution_per_axis():
    assert dilation_radius(512, 512) == (10, 10)
    assert dilation_radius(1024, 2048) == (20, 40)  # as if dilated at 512x512 and stretched back
    assert dilation_radius(256, 256) == (5, 5)
    mask = torch.zeros(1, 1024, 2048, dtype=torch.bool)
    mask[0, 500, 1000] = True
    grown = dilate_like_official(mask)[0]
    ys, xs = torch.nonzero(grown, as_tuple=True)
    assert (ys.min().item(), ys.max().item(), xs.min().item(), xs.max().item()) == (480, 520, 960, 1040)


def test_dilate_keeps_dtype_and_device_and_handles_edges():
    mask = torch.zeros(2, 9, 9)
    mask[1, 0, 0] = 1.0
    grown = dilate(mask, 2)
    assert grown.dtype == torch.float32 and grown.device == mask.device
    assert grown[0].sum() == 0 and grown[1, :3, :3].sum() == 9 and grown[1].sum() == 9
    assert torch.equal(dilate(mask.bool(), 0), mask.bool())


def test_components_drop_small_ones_and_relabel():
    mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    mask[0, 2:12, 2:12] = True  # 100 px
    mask[0, 20:22, 20:22] = True  # 4 px: speckle
    mask[0, 30:35, 5:25] = True  # 100 px
    found = connected_components(mask, min_area=10)
    assert [(c.label, c.box, c.area) for c in found.components] == [(1, (2, 2, 12, 12), 100), (2, (5, 30, 25, 35), 100)]
    assert found.labels[0, 21, 21] == 0 and found.labels[0, 32, 10] == 2
    assert found.labels.dtype == torch.int32 and found.skipped == [None]


def test_components_of_empty_full_and_too_large_masks():
    empty = torch.zeros(1, 16, 16, dtype=torch.bool)
    full = torch.ones(1, 16, 16, dtype=torch.bool)
    assert connected_components(empty).components == []
    assert connected_components(empty).skipped == [None]
    whole = connected_components(full)  # max_area_ratio=1.0: a full mask is one region
    assert [(c.box, c.area) for c in whole.components] == [((0, 0, 16, 16), 256)]
    guarded = connected_components(full, max_area_ratio=0.5)
    assert guarded.components == [] and "100.0%" in guarded.skipped[0]
    speckle = torch.zeros(1, 16, 16, dtype=torch.bool)
    speckle[0, 3, 3] = True
    assert "min_area=5" in connected_components(speckle, min_area=5).skipped[0]


def test_par_is_the_artifact_fraction_per_image():
    mask = torch.zeros(2, 10, 10, dtype=torch.bool)
    mask[1, :5] = True
    assert par(mask).tolist() == [0.0, 0.5]


def test_torch_dilation_used_off_cpu_matches_the_cpu_one():
    torch.manual_seed(0)
    mask = torch.rand(2, 40, 56) > 0.97
    soft = torch.rand(1, 30, 30)
    assert torch.equal(_dilate_torch(mask, 3, 5), dilate(mask, (3, 5)))
    assert torch.equal(_dilate_torch(soft, 2, 2), dilate(soft, 2))
    assert _dilate_torch(mask, 3, 5).dtype == torch.bool
