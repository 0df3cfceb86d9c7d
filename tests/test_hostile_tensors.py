"""Non-finite images and tensors of the wrong layout (issue 13, cases 9 and 10)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pal_core import load_detector
from pal_core.layouts import LayoutError, check_images, check_mask
from pal_core.rank.ranking import Decoded, ImageEntry, score_batch
from pal_core.rank.selection import rank_by_par
from pal_nodes.detection import PALDetectArtifacts, PALPARScore, PALRankByPAR
from pal_nodes.refinement import PALComposite, PALConnectedComponentCrop, PALZoomInpaint


@pytest.fixture(scope="module")
def detector(tiny_detector_file):
    return load_detector(tiny_detector_file, device="cpu", input_size=64)


def seeds_with_one_nan(count=4, broken=2, value=float("nan")):
    images = torch.rand(count, 40, 48, 3, generator=torch.Generator().manual_seed(1))
    images[broken, 7, 9, 1] = value
    return images


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_pixel_gives_a_nan_score_not_a_perfect_one(detector, value):
    images = seeds_with_one_nan(value=value)
    par = detector.par(images, threshold=0.3)
    assert math.isnan(par[2]) and torch.isfinite(par[[0, 1, 3]]).all()
    clean = detector.par(images[[0, 1, 3]], threshold=0.3)
    assert torch.equal(par[[0, 1, 3]], clean)  # the broken image does not change the others' scores
    assert torch.isnan(detector.predict(images)[2]).all()


def test_rank_by_par_never_keeps_a_broken_seed(detector):
    images = seeds_with_one_nan()
    images[[0, 1, 3]] = 0.5  # the clean seeds score the same
    shown = PALRankByPAR().rank(detector, images, 1, 1.0, 0.3)
    out_images, masks, kept, par, report = shown["result"]
    assert kept[0] != 2 and 2 not in PALRankByPAR().rank(detector, images, 0, 1.0, 0.3)["result"][2]
    assert "#2  not scored" in shown["ui"]["text"][0].splitlines()[-1]  # listed last on the node
    entry = json.loads(report)["images"][2]
    assert entry["par"] is None and not entry["kept"] and "non-finite" in entry["error"]
    assert torch.isfinite(out_images).all()
    only_broken = seeds_with_one_nan(count=1, broken=0)
    _, _, kept, _, report = PALRankByPAR().rank(detector, only_broken, 1, 1.0, 0.3)["result"]
    assert kept == [] and "could be scored" in json.loads(report)["message"]


def test_rank_by_par_orders_nan_last_whatever_the_limits():
    par = torch.tensor([0.3, float("nan"), 0.1, 0.0])
    assert rank_by_par(par) == [3, 2, 0]
    assert rank_by_par(par, top_k=5, max_par=1.0) == [3, 2, 0]
    with pytest.raises(ValueError, match="NaN"):
        rank_by_par(par, max_par=float("nan"))


def test_par_score_node_reports_the_broken_image(detector):
    result = PALPARScore().score(0.3, images=seeds_with_one_nan(), detector=detector)
    scores, report = result["result"]
    assert math.isnan(scores[2])
    entries = json.loads(report)  # valid JSON: no bare NaN in it
    assert entries[2]["par"] is None and "non-finite" in entries[2]["error"]


def test_pal_rank_records_a_broken_image_as_an_error(detector):
    images = seeds_with_one_nan(count=2, broken=1)
    batch = [Decoded(ImageEntry(f"/x/{i}.png", f"{i}.png"), images[i], None) for i in range(2)]
    records = score_batch(detector, batch, 0.3)
    assert "par" in records[0] and "error" in records[1] and "non-finite" in records[1]["error"]


# ------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("shape, message", [
    ((2, 3, 32, 32), r"channels-first \[B, C, H, W\]; use images.permute\(0, 2, 3, 1\)"),
    ((32, 32, 3), r"without its batch dimension.*unsqueeze\(0\)"),
    ((32 * 32 * 3,), r"an IMAGE is \[B, H, W, 3\]"),
    ((2, 32, 32, 7), r"3 channels last"),
    ((0, 32, 32, 3), r"empty"),
])
def test_images_of_the_wrong_layout_are_named_at_the_door(detector, shape, message):
    wrong = torch.rand(shape)
    with pytest.raises(LayoutError, match=message):
        check_images(wrong)
    with pytest.raises(LayoutError, match=message):
        PALDetectArtifacts().detect(detector, wrong, 0.5)
    with pytest.raises(LayoutError, match=message):
        PALConnectedComponentCrop().crop(wrong, torch.zeros(1, 32, 32), 0, 1.5, 4, 0.9, 64, "8", True)


@pytest.mark.parametrize("shape, message", [
    ((32 * 32,), r"a MASK is \[B, H, W\]"),
    ((1, 1, 32, 32), r"\[B, 1, H, W\].*mask\[:, 0\]"),
    ((1, 32, 32, 3), r"which is an IMAGE"),
    ((1, 0, 32), r"no pixels"),
])
def test_masks_of_the_wrong_layout_are_named_at_the_door(shape, message):
    with pytest.raises(LayoutError, match=message):
        check_mask(torch.rand(shape))
    with pytest.raises(LayoutError, match=message):
        PALConnectedComponentCrop().crop(torch.rand(1, 32, 32, 3), torch.rand(shape), 0, 1.5, 4, 0.9, 64, "8", True)
    with pytest.raises(LayoutError, match=message):
        PALPARScore().score(0.5, mask=torch.rand(shape))


def test_good_layouts_pass_and_a_single_mask_gets_its_batch():
    assert check_mask(torch.zeros(16, 16)).shape == (1, 16, 16)
    assert check_mask(torch.zeros(2, 16, 16, dtype=torch.bool)).dtype == torch.float32
    assert check_images(torch.zeros(0, 8, 8, 3), allow_empty=True).shape[0] == 0
    with pytest.raises(LayoutError, match="dtype torch.int64"):
        check_images(torch.zeros(1, 8, 8, 3, dtype=torch.long))
    with pytest.raises(LayoutError, match="not an IMAGE tensor"):
        check_images([[0.0]])


def test_inpaint_and_composite_check_their_inputs():
    from pal_core.refinement.inpainters import make_inpainter
    with pytest.raises(LayoutError, match="crops has shape"):
        PALZoomInpaint().inpaint(torch.rand(1, 3, 32, 32), torch.rand(1, 32, 32), make_inpainter("opencv"), "", 0)
    crops, crop_masks, plan = PALConnectedComponentCrop().crop(torch.rand(1, 32, 32, 3), torch.zeros(1, 32, 32), 0,
                                                               1.5, 4, 0.9, 64, "8", True)
    assert crops.shape[0] == 0  # nothing found: empty crops are fine downstream
    with pytest.raises(LayoutError, match="inpainted_crops has shape"):
        PALComposite().composite(torch.rand(1, 32, 32, 3), torch.rand(3, 64, 64), plan, 0.1, False)
