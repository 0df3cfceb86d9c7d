"""Compositing: exact where nothing changed, feathered blend, colour matching, dtype and device kept."""

from __future__ import annotations

import pytest
import torch

from pal_core.detect.masks import connected_components
from pal_core.refinement.composite import blend_weights, color_matched, composite
from pal_core.refinement.crops import plan_crops


def make_plan(batch: int = 1, height: int = 96, width: int = 128, resolution: int = 64):
    mask = torch.zeros(batch, height, width, dtype=torch.bool)
    mask[-1, 30:50, 20:45] = True
    mask[-1, 70:80, 100:120] = True
    mask[-1, 0:8, 120:128] = True  # touches the image corner
    return plan_crops(connected_components(mask), min_side=16, resolution=resolution)


def test_identity_inpainter_gives_the_input_exactly():
    images = torch.rand(2, 96, 128, 3)
    plan = make_plan(batch=2)
    crops = plan.extract(images)
    result = composite(images, plan, crops.clone(), crops, color_match=True)
    assert torch.equal(result.images, images)
    assert result.blend_mask.shape == (2, 96, 128) and result.blend_mask[1].max() == 1.0
    assert result.blend_mask[0].max() == 0.0


def test_pixels_outside_the_blend_mask_never_change():
    torch.manual_seed(0)
    images = torch.rand(1, 96, 128, 3)
    plan = make_plan()
    noise = torch.rand(len(plan), plan.size, plan.size, 3)  # an inpainter that changes every pixel
    result = composite(images, plan, noise)
    outside = result.blend_mask == 0
    assert outside.sum() > 0.5 * outside.numel()
    assert torch.equal(result.images[outside], images[outside])
    changed = (result.images != images).any(-1)
    assert changed[0, 35, 30] and not (changed & outside).any()
    # fully inside a region the fix replaces the original
    assert result.blend_mask[0, 40, 30] == 1.0


def test_a_repainted_flat_region_is_pasted_and_faded_out():
    images = torch.zeros(1, 96, 128, 3)
    plan = make_plan()
    white = torch.ones(len(plan), plan.size, plan.size, 3)
    result = composite(images, plan, white)
    row = result.images[0, 40, :, 0]
    assert torch.allclose(row[20:45], torch.ones(25))  # the component itself is fully repainted
    assert row[0] == 0 and ((row[10:20] > 0) & (row[10:20] < 1)).any()  # a soft edge to its left
    assert torch.allclose(result.images[..., 0], result.blend_mask, atol=1e-6)  # white over black = the weight


def test_blend_weights_are_zero_at_inner_crop_edges_and_full_at_image_edges():
    region = torch.zeros(40, 40, dtype=torch.bool)
    region[12:28, 12:28] = True
    weights = blend_weights(region, (10, 10, 50, 50), 100, 100)
    assert weights[12:28, 12:28].min() == 1.0
    assert weights[0].max() == 0 and weights[-1].max() == 0 and weights[:, 0].max() == 0
    corner = torch.zeros(40, 40, dtype=torch.bool)
    corner[:10, :10] = True  # a region in the image's top-left corner, crop at (0, 0)
    at_edge = blend_weights(corner, (0, 0, 40, 40), 100, 100)
    assert at_edge[0, :11].min() == 1.0 and at_edge[:11, 0].min() == 1.0  # mask + 1 px grow, up to the border
    assert 0 < at_edge[0, 11] < 1 and at_edge[0, 20] == 0


def test_color_matching_removes_a_colour_cast():
    torch.manual_seed(1)
    crop = 0.4 + 0.2 * torch.rand(64, 64, 3)
    mask = torch.zeros(64, 64)
    mask[24:40, 24:40] = 1
    cast = (crop + torch.tensor([0.15, -0.05, 0.0])).clamp(0, 1)  # inpainter output with a colour cast
    matched = color_matched(cast, crop, mask)
    assert (matched - crop).abs().mean() < 0.25 * (cast - crop).abs().mean()
    assert torch.equal(color_matched(crop, crop, mask), crop)  # nothing changed: nothing recoloured


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_device_are_kept(dtype):
    images = torch.rand(1, 96, 128, 3).to(dtype)
    plan = make_plan()
    crops = plan.extract(images)
    assert crops.dtype == dtype
    result = composite(images, plan, torch.ones_like(crops), crops)
    assert result.images.dtype == dtype and result.images.device == images.device
    assert result.blend_mask.dtype == torch.float32
    outside = result.blend_mask == 0
    assert torch.equal(result.images[outside], images[outside])


def test_mismatched_inputs_are_refused():
    images = torch.rand(1, 96, 128, 3)
    plan = make_plan()
    with pytest.raises(ValueError, match="3 regions"):
        composite(images, plan, torch.rand(2, plan.size, plan.size, 3))
