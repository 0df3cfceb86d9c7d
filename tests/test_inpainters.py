"""The inpainter interface and the OpenCV inpainters."""

from __future__ import annotations

import pytest
import torch

from pal_core.refinement.inpainters import Inpainter, OpenCVInpainter, make_inpainter


def holed_crops(count: int = 2, size: int = 48):
    """Flat-coloured crops with a black square where the mask is set: a good fill restores the colour."""
    colours = torch.tensor([[0.8, 0.3, 0.1], [0.2, 0.5, 0.9], [0.4, 0.4, 0.4]])[:count]
    crops = colours[:, None, None, :].expand(count, size, size, 3).clone()
    masks = torch.zeros(count, size, size)
    masks[:, 16:32, 16:32] = 1.0
    crops[:, 16:32, 16:32] = 0.0
    return crops, masks, colours


@pytest.mark.parametrize("spec", ["opencv", "opencv-ns"])
def test_opencv_fills_holes_and_leaves_the_rest_exact(spec):
    crops, masks, colours = holed_crops()
    crops[:, :4] = torch.rand(2, 4, 48, 3)  # values that are not on the 8-bit grid, outside the mask
    result = make_inpainter(spec).inpaint(crops, masks)
    assert result.shape == crops.shape and result.dtype == crops.dtype
    outside = masks == 0
    assert torch.equal(result[outside], crops[outside])
    filled = result[:, 20:28, 20:28].reshape(2, -1, 3).mean(1)
    assert torch.allclose(filled, colours, atol=0.02)


def test_opencv_keeps_dtype_and_accepts_a_batch_of_zero():
    crops, masks, _ = holed_crops(1)
    result = OpenCVInpainter().inpaint(crops.double(), masks.double())
    assert result.dtype == torch.float64
    empty = OpenCVInpainter().inpaint(torch.zeros(0, 8, 8, 3), torch.zeros(0, 8, 8))
    assert empty.shape == (0, 8, 8, 3)


class Recorder(Inpainter):
    """Returns the crops unchanged and remembers the prompts and seeds it was given."""

    def _inpaint(self, crops, masks, prompts, seeds):
        self.seen = (prompts, seeds)
        return crops


def test_interface_expands_prompts_and_seeds_and_checks_shapes():
    crops, masks, _ = holed_crops(3)
    recorder = Recorder()
    recorder.inpaint(crops, masks, "a cat", 7)
    assert recorder.seen == (["a cat"] * 3, [7, 7, 7])
    recorder.inpaint(crops, masks, ["a", "b", "c"], [1, 2, 3])
    assert recorder.seen == (["a", "b", "c"], [1, 2, 3])
    with pytest.raises(ValueError, match="2 prompts for 3 crops"):
        recorder.inpaint(crops, masks, ["a", "b"])
    with pytest.raises(ValueError, match="masks have shape"):
        recorder.inpaint(crops, masks[:, :10])
    with pytest.raises(ValueError, match="channels last"):
        recorder.inpaint(crops.permute(0, 3, 1, 2), masks)


def test_unknown_inpainter_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="opencv, opencv-fsr-fast@128, opencv-telea"):
        make_inpainter("lama")
    with pytest.raises(ValueError, match="unknown inpainter"):
        make_inpainter("diffusers:")
