"""The inpainter benchmark's scores on cases whose answer is known, and the weight-free inpainters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pal_core.refinement import inpainters
from pal_core.refinement.inpaint_quality import masked_psnr, masked_ssim, repaint
from pal_core.refinement.inpainters import Inpainter, available_weight_free, make_inpainter
from pal_core.refinement.refine import RefineOptions


def case(size: int = 64):
    """A textured clean image, a damaged copy (a flat grey square) and the square's mask."""
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[24:36, 20:40] = True
    damaged = clean.copy()
    damaged[mask] = 128
    return clean, damaged, mask


def test_psnr_and_ssim_on_known_values():
    clean, damaged, mask = case()
    assert masked_psnr(clean, clean, mask) == math.inf and masked_ssim(clean, clean, mask) == pytest.approx(1.0)
    off_by_ten = clean.astype(np.float64)
    off_by_ten[mask] += 10  # MSE 100 inside the mask: PSNR = 10 log10(255^2 / 100)
    assert masked_psnr(off_by_ten, clean, mask) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    outside_only = clean.copy()
    outside_only[~mask] = 0  # only the masked pixels count for PSNR
    assert masked_psnr(outside_only, clean, mask) == math.inf
    expected = 10 * math.log10(255 ** 2 / np.mean((damaged[mask].astype(float) - clean[mask]) ** 2))
    assert masked_psnr(damaged, clean, mask) == pytest.approx(expected)
    assert masked_ssim(damaged, clean, mask) < 0.5  # flat grey against noise: little in common
    # two flat images: no variance, so SSIM is the luminance term alone, (2ab + C1) / (a^2 + b^2 + C1)
    c1 = (0.01 * 255) ** 2
    flat_a, flat_b = np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 150, np.uint8)
    assert masked_ssim(flat_b, flat_a, np.ones((16, 16), bool)) == pytest.approx(
        (2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1))
    with pytest.raises(ValueError, match="mask is empty"):
        masked_psnr(clean, clean, np.zeros_like(mask))


class Identity(Inpainter):
    def _inpaint(self, crops, masks, prompts, seeds):
        return crops.clone()


class Perfect(Inpainter):
    """Knows the clean crop (the test's crop is the whole image at scale 1)."""

    def __init__(self, clean: np.ndarray):
        self.clean = torch.from_numpy(clean).float() / 255.0

    def _inpaint(self, crops, masks, prompts, seeds):
        return self.clean.expand_as(crops).clone()


# One crop that is the whole 64x64 image at its own size: nothing is resampled on the way.
WHOLE = RefineOptions(min_side=64, resolution=64, min_area=1, dilate_iterations=0, redetect=False)


def test_identity_scores_the_damaged_image_and_a_perfect_inpainter_scores_infinity():
    clean, damaged, mask = case()
    unchanged, details = repaint(damaged, mask, Identity(), WHOLE)
    assert np.array_equal(unchanged, damaged) and len(details.plan) == 1
    assert masked_psnr(unchanged, clean, mask) == masked_psnr(damaged, clean, mask)
    restored, details = repaint(damaged, mask, Perfect(clean), WHOLE)
    assert details.plan.scale(0) == 1.0
    assert masked_psnr(restored, clean, mask) == math.inf and masked_ssim(restored, clean, mask) == pytest.approx(1.0)


@pytest.mark.parametrize("spec", available_weight_free())
def test_every_weight_free_inpainter_fills_a_hole_with_the_surrounding_colour(spec):
    crops = torch.tensor([0.2, 0.5, 0.9]).expand(1, 48, 48, 3).clone()
    masks = torch.zeros(1, 48, 48)
    masks[:, 16:32, 16:32] = 1.0
    crops[:, 16:32, 16:32] = 0.0
    crops[:, :4] = torch.rand(1, 4, 48, 3)  # off the 8-bit grid, outside the mask: must come back exact
    result = make_inpainter(spec).inpaint(crops, masks)
    assert torch.equal(result[masks == 0], crops[masks == 0])
    assert torch.allclose(result[0, 20:28, 20:28].reshape(-1, 3).mean(0), torch.tensor([0.2, 0.5, 0.9]), atol=0.03)


def test_work_size_inpaints_smaller_and_fills_the_whole_hole():
    crops = torch.tensor([0.8, 0.3, 0.1]).expand(1, 96, 96, 3).clone()
    masks = torch.zeros(1, 96, 96)
    masks[:, 40:57, 31:60] = 1.0  # odd edges: lost pixels in shrinking would come back unfilled
    crops[masks > 0.5] = 0.0
    result = make_inpainter("opencv-telea@32").inpaint(crops, masks)
    assert make_inpainter("opencv-telea@32").name == "opencv-telea@32"
    assert torch.allclose(result[0][masks[0] > 0.5].mean(0), torch.tensor([0.8, 0.3, 0.1]), atol=0.02)
    assert result[0][masks[0] > 0.5].min() > 0.05  # no black pixel left


def test_unknown_and_unavailable_methods_say_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="opencv-fsr-fast@256"):
        make_inpainter("opencv-magic")
    with pytest.raises(ValueError, match="unknown inpainter"):
        make_inpainter("opencv-telea@big")
    monkeypatch.setattr(inpainters, "has_xphoto", lambda: False)  # an OpenCV without the contrib modules
    monkeypatch.setattr(inpainters.opencv, "has_xphoto", lambda: False)
    with pytest.raises(ValueError, match="pip install opencv-contrib-python-headless"):
        make_inpainter("opencv-shiftmap")
    assert inpainters.available_weight_free() == ("opencv-ns", "opencv-telea")  # the fallback default first
    assert make_inpainter("opencv").name == "opencv-ns"


def test_the_default_is_the_benchmarks_choice_and_exemplar_methods_survive_odd_masks():
    assert make_inpainter("opencv").name == "opencv-fsr-fast@128" == available_weight_free()[0]
    crops = torch.rand(3, 32, 32, 3)
    masks = torch.zeros(3, 32, 32)
    masks[1] = 1.0  # all hole: nothing to copy from, the crop is returned as it is
    masks[2, 5, 5] = 1.0
    for spec in ("opencv-fsr-fast@128", "opencv-shiftmap"):
        result = make_inpainter(spec).inpaint(crops, masks)  # shift-map crashed the process on an empty hole
        assert torch.equal(result[0], crops[0]) and torch.equal(result[2][masks[2] == 0], crops[2][masks[2] == 0])
        assert torch.allclose(result[1], crops[1], atol=0.5 / 255)  # back through 8 bits, unchanged
