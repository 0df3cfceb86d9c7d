"""Crop plan: square, rounded, inside the image, covering each component with its margin."""

from __future__ import annotations

import math

import pytest
import torch

from pal_core.detect.masks import connected_components
from pal_core.refinement.crops import CropPlan, plan_crops, round_to_multiple, square_box


def blobs(height: int, width: int, boxes: list[tuple[int, int, int, int]], batch: int = 1, image: int = 0):
    """A bool mask batch with filled rectangles (x0, y0, x1, y1) in image `image`."""
    mask = torch.zeros(batch, height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes:
        mask[image, y0:y1, x0:x1] = True
    return mask


def test_round_to_multiple():
    assert [round_to_multiple(v, 8) for v in (500, 512, 515, 3)] == [504, 512, 512, 8]
    assert round_to_multiple(500, 64) == 512 and round_to_multiple(520, 16) == 528
    with pytest.raises(ValueError):
        round_to_multiple(512, 0)


@pytest.mark.parametrize("zoom", [1.0, 1.5, 2.0])
def test_squares_cover_components_with_margin_inside_the_image(zoom):
    height, width = 200, 300
    boxes = [(10, 20, 50, 40), (250, 150, 300, 200), (120, 0, 124, 90), (0, 170, 30, 180)]
    plan = plan_crops(connected_components(blobs(height, width, boxes)), zoom=zoom, min_side=16, resolution=100,
                      multiple=16, merge_overlapping=False)
    assert plan.size == 96 and plan.crop_masks.shape == (4, 96, 96)
    for region, (bx0, by0, bx1, by1) in zip(sorted(plan.regions, key=lambda r: r.component_box),
                                             sorted(boxes)):
        x0, y0, x1, y1 = region.box
        assert x1 - x0 == y1 - y0 == max(16, math.ceil(zoom * max(bx1 - bx0, by1 - by0)))
        assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height  # fits, so moved inside
        margin = (x1 - x0 - max(bx1 - bx0, by1 - by0)) // 2
        assert x0 <= max(bx0 - margin, 0) and x1 >= min(bx1 + margin, width)
        assert y0 <= max(by0 - margin, 0) and y1 >= min(by1 + margin, height)


def test_crop_larger_than_short_side_is_centred_and_padded():
    # A 60x100 component in a 100-row image: side 150 > 100 rows, so the crop sticks out and is padded.
    box = square_box((20, 0, 80, 100), height=100, width=400, zoom=1.5, min_side=8)
    assert box == (0, -25, 150, 125)  # moved right to stay inside along x; centred and padded along y
    assert square_box((0, 0, 10, 10), height=40, width=30, zoom=1.5, min_side=64) == (-5, 0, 35, 40)
    image = torch.rand(1, 100, 400, 3)
    plan = plan_crops(connected_components(blobs(100, 400, [(20, 0, 80, 100)])), resolution=150, multiple=1)
    crop = plan.extract(image)[0]
    assert crop.shape == (150, 150, 3)
    assert torch.equal(crop[25:125], image[0, :, :150])  # scale 1: pixels as they are
    assert torch.equal(crop[0], crop[25]) and torch.equal(crop[149], crop[124])  # padding repeats edge rows
    assert not plan.region_masks[0][:25].any() and plan.region_masks[0][25:125, 20:80].all()
    assert plan.region_masks[0].sum() == 60 * 100


def test_overlapping_crops_merge_into_one_region():
    mask = blobs(128, 128, [(20, 20, 40, 40), (44, 20, 60, 40), (100, 100, 110, 110)])
    components = connected_components(mask)
    separate = plan_crops(components, min_side=8, merge_overlapping=False)
    merged = plan_crops(components, min_side=8, merge_overlapping=True)
    assert len(separate) == 3 and len(merged) == 2
    assert merged.regions[0].labels == (1, 2) and merged.regions[0].component_box == (20, 20, 60, 40)
    assert [r.index_in_image for r in merged.regions] == [0, 1]
    boxes = [r.box for r in merged.regions]
    assert not (boxes[0][0] < boxes[1][2] and boxes[1][0] < boxes[0][2] and boxes[0][1] < boxes[1][3]
                and boxes[1][1] < boxes[0][3])
    assert merged.region_masks[0].sum() == 20 * 20 + 16 * 20


def test_batch_with_zero_one_and_many_regions():
    height, width = 96, 128
    mask = torch.zeros(3, height, width, dtype=torch.bool)
    mask[1, 40:50, 60:70] = True
    for k in range(4):
        mask[2, 5 + 22 * k:10 + 22 * k, 5 + 30 * k:12 + 30 * k] = True
    plan = plan_crops(connected_components(mask), min_side=8, zoom=1.5, resolution=64)
    assert [r.image_index for r in plan.regions] == [1, 2, 2, 2, 2]
    assert plan.regions_of(0) == [] and plan.regions_of(1) == [0]
    images = torch.rand(3, height, width, 3, dtype=torch.float64)
    crops = plan.extract(images)
    assert crops.shape == (5, 64, 64, 3) and crops.dtype == torch.float64
    assert plan.scale(0) == 64 / 15
    # the crop mask marks the component where it lands after zooming
    assert plan.crop_masks[0].sum() > 0 and plan.crop_masks[0][0].sum() == 0


def test_empty_and_full_masks():
    empty = plan_crops(connected_components(torch.zeros(2, 32, 48, dtype=torch.bool)))
    assert len(empty) == 0 and empty.extract(torch.rand(2, 32, 48, 3)).shape == (0, 512, 512, 3)
    full = plan_crops(connected_components(torch.ones(1, 32, 48, dtype=torch.bool)), resolution=64)
    assert [r.box for r in full.regions] == [(0, -8, 48, 40)]  # whole image; the crop never exceeds 48
    assert full.region_masks[0][8:40].all() and not full.region_masks[0][:8].any()


def test_extract_rejects_images_of_another_size():
    plan = plan_crops(connected_components(blobs(32, 32, [(4, 4, 8, 8)])))
    with pytest.raises(ValueError, match="do not match the plan"):
        plan.extract(torch.rand(1, 32, 40, 3))


def test_subset_keeps_selected_regions():
    plan = plan_crops(connected_components(blobs(64, 200, [(5, 5, 10, 10), (100, 5, 110, 10), (180, 50, 190, 60)])),
                      min_side=8)
    kept = plan.subset([0, 2])
    assert isinstance(kept, CropPlan) and [r.labels for r in kept.regions] == [(1,), (3,)]
    assert torch.equal(kept.crop_masks[1], plan.crop_masks[2])


def test_merging_follows_squares_that_grow_into_further_regions():
    # A and B overlap; their joint square (side 78) then reaches C, whose own square touched neither.
    mask = blobs(64, 400, [(0, 20, 20, 30), (32, 20, 52, 30), (75, 20, 95, 30), (300, 20, 310, 30)])
    plan = plan_crops(connected_components(mask), min_side=8, zoom=1.5)
    assert [r.labels for r in plan.regions] == [(1, 2, 3), (4,)]
    assert plan.regions[0].component_box == (0, 20, 95, 30)
