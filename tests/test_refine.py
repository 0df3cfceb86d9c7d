"""The refinement pipeline end to end, with a detector whose verdict is known: magenta = artifact."""

from __future__ import annotations

import pytest
import torch

import pal_core
from pal_core.refinement.inpainters import Inpainter, OpenCVInpainter
from pal_core.refinement.refine import RefineOptions, refine


class MagentaDetector:
    """Calls a pixel an artifact when it is magenta; counts its calls."""

    calls = 0

    def predict(self, images: torch.Tensor, progress=None, threshold: float = 0.5) -> torch.Tensor:
        self.calls += 1
        self.images_seen = getattr(self, "images_seen", 0) + images.shape[0]
        if progress is not None:
            progress(images.shape[0], images.shape[0])
        r, g, b = images.float().unbind(-1)
        return ((r > 0.9) & (g < 0.1) & (b > 0.9)).float()


class Identity(Inpainter):
    def _inpaint(self, crops, masks, prompts, seeds):
        return crops.clone()


class PaintMagenta(Inpainter):
    """Makes things worse: the whole crop becomes an artifact."""

    def _inpaint(self, crops, masks, prompts, seeds):
        return torch.tensor([1.0, 0.0, 1.0], dtype=crops.dtype).expand_as(crops).clone()


def grey_images(batch: int, height: int = 96, width: int = 128, dtype=torch.float32) -> torch.Tensor:
    torch.manual_seed(0)
    return (0.45 + 0.1 * torch.rand(batch, height, width, 3)).to(dtype)


def add_blob(images, b, y0, y1, x0, x1):
    images[b, y0:y1, x0:x1] = torch.tensor([1.0, 0.0, 1.0], dtype=images.dtype)


OPTIONS = RefineOptions(min_area=4, min_side=16, resolution=64)


def test_batch_of_three_with_zero_one_and_many_regions():
    images = grey_images(3)
    add_blob(images, 1, 40, 50, 60, 70)
    for k in range(3):
        add_blob(images, 2, 10 + 30 * k, 16 + 30 * k, 10 + 40 * k, 16 + 40 * k)
    detector = MagentaDetector()
    result = refine(images, detector, OpenCVInpainter(), OPTIONS, prompts=["", "", ""], seed=10)
    assert result.images.shape == images.shape
    assert [r.image_index for r in result.regions] == [1, 2, 2, 2]
    assert [r.seed for r in result.regions] == [10, 10, 11, 12]  # seed + i within each image
    assert [(r.artifact_px_before, r.artifact_px_after, r.kept) for r in result.regions] == \
        [(100, 0, True), (36, 0, True), (36, 0, True), (36, 0, True)]
    assert torch.equal(result.images[0], images[0])
    assert torch.allclose(result.par_before, torch.tensor([0.0, 100 / (96 * 128), 108 / (96 * 128)]))
    assert result.par_after.tolist() == [0.0, 0.0, 0.0]
    assert detector.calls == 2  # detect, re-detect; no third pass when every fix is kept
    outside = result.blend_mask == 0
    assert torch.equal(result.images[outside], images[outside])
    report = result.report()
    assert report[0] == {"par_before": 0.0, "par_after": 0.0, "skipped": None, "regions": []}
    assert report[1]["regions"][0]["box"] == list(result.regions[0].box) and report[1]["regions"][0]["kept"]


def test_identity_inpainter_leaves_images_exact_and_fixes_are_not_kept():
    images = grey_images(2)
    add_blob(images, 0, 20, 30, 20, 30)
    detector = MagentaDetector()
    result = refine(images, detector, Identity(), OPTIONS)
    assert torch.equal(result.images, images) and detector.calls == 2  # nothing kept: no third pass needed
    assert result.blend_mask.max() == 0
    assert [r.kept for r in result.regions] == [False]
    assert torch.equal(result.par_after, result.par_before)


def test_fixes_that_make_things_worse_are_reverted_per_region():
    images = grey_images(1, 128, 256)
    add_blob(images, 0, 20, 30, 20, 30)
    add_blob(images, 0, 90, 100, 200, 210)

    class WorsenSecond(Inpainter):  # region i gets seed i: the second region is made worse
        def _inpaint(self, crops, masks, prompts, seeds):
            return torch.stack([(PaintMagenta() if seed == 1 else OpenCVInpainter()).inpaint(crop[None], mask[None])[0]
                                for crop, mask, seed in zip(crops, masks, seeds)])

    detector = MagentaDetector()
    result = refine(images, detector, WorsenSecond(), OPTIONS)
    assert [r.kept for r in result.regions] == [True, False]
    assert detector.calls == 3  # the mixed outcome is measured again on the final image
    first, second = result.regions
    assert torch.equal(result.images[0, 80:110, 190:220], images[0, 80:110, 190:220])  # reverted region
    assert not torch.equal(result.images[0, 20:30, 20:30], images[0, 20:30, 20:30])
    assert result.par_after[0] == 100 / (128 * 256)
    assert second.artifact_px_after > second.artifact_px_before and first.artifact_px_after == 0


def test_without_redetect_every_fix_stays():
    images = grey_images(1)
    add_blob(images, 0, 20, 30, 20, 30)
    detector = MagentaDetector()
    result = refine(images, detector, PaintMagenta(), RefineOptions(min_area=4, min_side=16, resolution=64,
                                                                    redetect=False))
    assert detector.calls == 1 and result.par_after is None and result.mask_after is None
    assert result.regions[0].kept and result.regions[0].artifact_px_after is None
    assert (result.images != images).any()


def test_a_mask_covering_most_of_the_image_is_skipped_and_reported():
    images = grey_images(1)
    add_blob(images, 0, 0, 90, 0, 128)
    detector = MagentaDetector()
    result = refine(images, detector, OpenCVInpainter(), OPTIONS)
    assert result.regions == [] and torch.equal(result.images, images)
    assert detector.calls == 1 and torch.equal(result.par_after, result.par_before)
    assert "max_area_ratio" in result.report()[0]["skipped"]


def test_dtype_is_kept():
    images = grey_images(1, dtype=torch.float64)
    add_blob(images, 0, 20, 30, 20, 30)
    result = refine(images, MagentaDetector(), OpenCVInpainter(), OPTIONS)
    assert result.images.dtype == torch.float64 and result.images.device == images.device
    assert result.regions[0].kept


def test_runs_with_a_real_detector(tiny_detector_file):
    detector = pal_core.load_detector(tiny_detector_file, input_size=64)
    images = grey_images(2, 64, 80)
    result = refine(images, detector, OpenCVInpainter(), RefineOptions(threshold=0.3, min_side=16, resolution=32))
    assert result.images.shape == images.shape and result.mask_before.shape == (2, 64, 80)
    outside = result.blend_mask == 0
    assert torch.equal(result.images[outside], images[outside])
    assert result.par_before.shape == (2,) and len(result.report()) == 2


def test_a_full_mask_is_one_region_over_the_whole_image_when_allowed():
    images = grey_images(1, 48, 64)
    images[:] = torch.tensor([1.0, 0.0, 1.0])
    options = RefineOptions(min_side=16, resolution=32, max_area_ratio=1.0, color_match=True)
    result = refine(images, MagentaDetector(), OpenCVInpainter(), options)
    assert [r.box for r in result.regions] == [(0, -8, 64, 56)]
    assert result.regions[0].area == 48 * 64 and result.regions[0].artifact_px_before == 48 * 64
    assert result.images.shape == images.shape and result.blend_mask.shape == (1, 48, 64)


def test_only_changed_images_are_detected_again():
    images = grey_images(3)
    add_blob(images, 1, 40, 50, 60, 70)
    detector = MagentaDetector()
    result = refine(images, detector, OpenCVInpainter(), OPTIONS)
    assert detector.calls == 2 and detector.images_seen == 3 + 1  # the batch once, then image 1 alone
    assert result.par_after.tolist() == [0.0, 0.0, 0.0]


def test_progress_counts_images_regions_and_redetection_and_can_cancel():
    images = grey_images(2)
    add_blob(images, 0, 10, 16, 10, 16)
    add_blob(images, 0, 60, 66, 90, 96)
    calls = []
    refine(images, MagentaDetector(), OpenCVInpainter(), OPTIONS, progress=lambda done, total: calls.append((done, total)))
    # 2 images detected, then 2 regions inpainted (total known now: 2 + 2 + 1 re-detection), then image 0 again
    assert calls[-1] == (5, 5)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert (3, 5) in calls and (4, 5) in calls

    class Cancelled(Exception):
        pass

    def cancel_after_first_region(done, total):
        if done == 3:
            raise Cancelled

    inpainted = []

    class Counting(Inpainter):
        def _inpaint(self, crops, masks, prompts, seeds):
            inpainted.append(crops.shape[0])
            return crops.clone()

    try:
        refine(images, MagentaDetector(), Counting(), OPTIONS, progress=cancel_after_first_region)
    except Cancelled:
        pass
    assert inpainted == [1]  # the second region was never started


def test_options_check_themselves_once():
    for bad, message in [({"threshold": 1.0}, "threshold must be a probability in \\[0, 1\\), not 1.0"),
                         ({"threshold": "0.5"}, "threshold must be a probability"),
                         ({"zoom": 0.5}, "zoom must be >= 1"),
                         ({"max_area_ratio": 0.0}, "max_area_ratio must be in \\(0, 1\\]"),
                         ({"dilate_kernel": 4}, "dilate_kernel must be an odd size"),
                         ({"resolution": 4, "min_area": -1}, "min_area must be >= 0, not -1; resolution must be >= 8")]:
        with pytest.raises(ValueError, match=message):
            RefineOptions(**bad)
    assert RefineOptions(threshold=0.0, zoom=1.0, max_area_ratio=1.0).zoom == 1.0
