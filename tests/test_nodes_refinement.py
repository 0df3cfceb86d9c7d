"""The refinement and inpainter nodes on real tensors: shapes, values, identity, errors, SEGS."""

from __future__ import annotations

import json
import types

import pytest
import torch

from pal_core import load_detector
from pal_core.inpainters import Inpainter
from pal_core.verdicts import fix_line
from pal_nodes import comfy_env
from pal_nodes.inpainting import PALComfyInpainter, PALLoadInpainter, inpainter_choices
from pal_nodes.refinement import (PALAutoFix, PALComposite, PALConnectedComponentCrop, PALCropsToSEGS,
                                  PALZoomInpaint, mask_for_images)


class Identity(Inpainter):
    """Returns the crops unchanged: compositing must then give back the input exactly."""

    name = "identity"

    def _inpaint(self, crops, masks, prompts, seeds):
        return crops.clone()


class Recorder(Inpainter):
    """Paints masked pixels a flat colour and records the seeds it was given."""

    name = "recorder"

    def __init__(self):
        self.seeds: list[int] = []

    def _inpaint(self, crops, masks, prompts, seeds):
        self.seeds += seeds
        out = crops.clone()
        out[masks > 0.5] = torch.tensor([0.0, 1.0, 0.0], dtype=crops.dtype)
        return out


def blob_masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Three images: no region, one region, three regions."""
    images = torch.rand(3, 256, 320, 3)
    mask = torch.zeros(3, 256, 320)
    mask[1, 100:110, 150:165] = 1
    mask[2, 10:20, 10:25] = 1  # far enough apart that their 64 px crops do not overlap
    mask[2, 200:215, 40:55] = 1
    mask[2, 100:115, 250:290] = 1
    return images, mask


CROP_ARGS = dict(dilation=0, zoom=1.5, min_area=4, max_area_ratio=0.5, target_size=64, multiple="8",
                 merge_overlapping=True)


def test_crop_plan_per_image_and_identity_roundtrip():
    images, mask = blob_masks()
    crops, crop_masks, plan = PALConnectedComponentCrop().crop(images, mask, **CROP_ARGS)
    assert crops.shape == (4, 64, 64, 3) and crop_masks.shape == (4, 64, 64)
    assert [r.image_index for r in plan.regions] == [1, 2, 2, 2]
    assert all(crop_masks[i].sum() > 0 for i in range(4))
    fixed = PALZoomInpaint().inpaint(crops, crop_masks, Identity(), "", 0, plan)[0]
    out, blend = PALComposite().composite(images, fixed, plan, 0.06, False)
    assert torch.equal(out, images)
    assert blend.shape == (3, 256, 320) and blend[0].sum() == 0 and blend[2].sum() > 0


def test_zoom_inpaint_seeds_and_composite_changes_only_blend_region():
    images, mask = blob_masks()
    crops, crop_masks, plan = PALConnectedComponentCrop().crop(images, mask, **CROP_ARGS)
    recorder = Recorder()
    fixed = PALZoomInpaint().inpaint(crops, crop_masks, recorder, "a prompt", 10, plan)[0]
    assert recorder.seeds == [10, 10, 11, 12]  # seed + region index within its own image
    out, blend = PALComposite().composite(images, fixed, plan, 0.06, False)
    outside = blend == 0
    assert torch.equal(out[outside], images[outside])
    assert (out[1, 104, 156] - torch.tensor([0.0, 1.0, 0.0])).abs().max() < 1e-4  # centre of the region repainted
    without_plan = Recorder()
    PALZoomInpaint().inpaint(crops, crop_masks, without_plan, "", 10)
    assert without_plan.seeds == [10, 11, 12, 13]


def test_empty_and_mismatched_masks():
    images = torch.rand(2, 40, 60, 3)
    crops, crop_masks, plan = PALConnectedComponentCrop().crop(images, torch.zeros(2, 40, 60), **CROP_ARGS)
    assert crops.shape[0] == 0 and len(plan) == 0
    fixed = PALZoomInpaint().inpaint(crops, crop_masks, Identity(), "", 0, plan)[0]
    out, blend = PALComposite().composite(images, fixed, plan, 0.06, True)
    assert torch.equal(out, images) and blend.sum() == 0
    small = torch.zeros(1, 64, 64)  # LoadImage's mask for an image without alpha; one mask for the batch
    small[0, 20:40, 20:40] = 1
    resized = mask_for_images(small, images)
    assert resized.shape == (2, 40, 60) and resized[1, 20, 30] > 0.5
    full = PALConnectedComponentCrop().crop(images, torch.ones(2, 40, 60), **CROP_ARGS)[2]
    assert len(full) == 0 and all("max_area_ratio" in s for s in full.skipped)
    with pytest.raises(ValueError, match="3 masks for 2 images"):
        PALConnectedComponentCrop().crop(images, torch.zeros(3, 40, 60), **CROP_ARGS)
    with pytest.raises(ValueError, match="connect the same images"):
        PALComposite().composite(torch.rand(2, 50, 60, 3), fixed, plan, 0.06, False)
    with pytest.raises(ValueError, match="crop_masks have shape"):
        PALZoomInpaint().inpaint(torch.rand(2, 64, 64, 3), torch.zeros(1, 64, 64), Identity(), "", 0)


def test_crops_to_segs_layout():
    images, mask = blob_masks()
    _, _, plan = PALConnectedComponentCrop().crop(images, mask, **CROP_ARGS)
    (segs,) = PALCropsToSEGS().to_segs(images, plan)
    assert len(segs) == 3 and [len(s[1]) for s in segs] == [0, 1, 3]
    (height, width), items = segs[1]
    assert (height, width) == (256, 320)
    seg = items[0]
    x0, y0, x1, y1 = seg.crop_region
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 256
    assert seg.cropped_image.shape == (1, y1 - y0, x1 - x0, 3)
    assert torch.equal(seg.cropped_image[0], images[1, y0:y1, x0:x1])
    assert seg.cropped_mask.shape == (y1 - y0, x1 - x0) and seg.cropped_mask.sum() == 150
    bx0, by0, bx1, by1 = seg.bbox
    assert (bx0, by0, bx1, by1) == (150, 100, 165, 110) and seg.label == "artifact" and seg.control_net_wrapper is None


def test_auto_fix_with_opencv_and_a_real_detector(tiny_detector_file):
    detector = load_detector(tiny_detector_file, device="cpu")
    (inpainter,) = PALLoadInpainter().load("opencv-telea", "", 30, 7.5, 0.99, "cpu", "fp32")
    images = torch.rand(2, 64, 80, 3)
    fixed, artifact_mask, blend, report, summary = PALAutoFix().fix(images, detector, inpainter, "", 0, 0.5, 1.5,
                                                                   64, 0.06, False, True)
    assert fixed.shape == images.shape and artifact_mask.shape == blend.shape == (2, 64, 80)
    assert torch.equal(artifact_mask.bool(), detector.mask(images))
    outside = blend == 0
    assert torch.equal(fixed[outside], images[outside])
    parsed = json.loads(report)
    assert len(parsed) == 2 and {"par_before", "par_after", "regions"} <= set(parsed[0])
    lines = summary.splitlines()
    assert lines[:2] == [fix_line(f"image {i}", parsed[i]) for i in range(2)]
    assert lines[2].startswith("2 images: ")


class MagentaDetector:
    """Calls magenta pixels artifacts; has what the nodes need from a `Detector` (model, device, predict)."""

    model = torch.nn.Identity()
    device = torch.device("cpu")

    def predict(self, images, progress=None):
        if progress is not None:
            progress(images.shape[0], images.shape[0])
        r, g, b = images.unbind(-1)
        return ((r > 0.9) & (g < 0.1) & (b > 0.9)).float()


def test_auto_fix_reports_each_region_and_shows_progress_and_cancel_between_regions(monkeypatch):
    images = torch.full((1, 96, 128, 3), 0.5)
    images[0, 10:20, 10:20] = torch.tensor([1.0, 0.0, 1.0])
    images[0, 70:80, 100:110] = torch.tensor([1.0, 0.0, 1.0])
    updates, inpainted = [], []

    class Interrupted(Exception):
        pass

    class Bar:
        def __init__(self, total):
            pass

        def update_absolute(self, value, total, preview=None):
            updates.append((value, total))

    def throw_if_interrupted():
        if cancel and inpainted:
            raise Interrupted

    class Grey(Inpainter):  # repaints the region grey: the artifact is gone
        def _inpaint(self, crops, masks, prompts, seeds):
            inpainted.append(seeds[0])
            out = crops.clone()
            out[masks > 0.5] = 0.5
            return out

    monkeypatch.setattr(comfy_env, "comfy_utils", types.SimpleNamespace(ProgressBar=Bar))
    monkeypatch.setattr(comfy_env, "model_management", types.SimpleNamespace(
        throw_exception_if_processing_interrupted=throw_if_interrupted, intermediate_device=lambda: torch.device("cpu")))
    cancel = False
    args = (images, MagentaDetector(), Grey(), "", 0, 0.5, 1.5, 64, 0.06, False, True)
    fixed, _, _, report, summary = PALAutoFix().fix(*args)
    assert updates[-1] == (4, 4) and len(updates) >= 4  # 1 image, 2 regions, 1 re-detection
    assert summary.splitlines()[0] == ("image 0: PAR 0.0163 -> 0.0000; 2 of 2 regions fixed: #0 fixed (artifact px "
                                       "100 -> 0), #1 fixed (artifact px 100 -> 0)")
    cancel, inpainted[:] = True, []
    with pytest.raises(Interrupted):
        PALAutoFix().fix(*args)
    assert inpainted == [0]  # cancelled after the first region


def test_zoom_inpaint_summary_says_what_changed_per_region():
    images, mask = blob_masks()
    crops, crop_masks, plan = PALConnectedComponentCrop().crop(images, mask, **CROP_ARGS)
    _, summary = PALZoomInpaint().inpaint(crops, crop_masks, Recorder(), "", 5, plan)
    lines = summary.splitlines()
    assert len(lines) == 4 and lines[0].startswith("image 1 region #0: ") and "seed 5" in lines[0]
    assert lines[3].startswith("image 2 region #2: ") and "seed 7" in lines[3] and "mean change" in lines[3]
    _, summary = PALZoomInpaint().inpaint(crops, crop_masks, Identity(), "", 5, plan)
    assert all("unchanged" in line for line in summary.splitlines())


def test_inpainter_choices_list_model_folders(tmp_path, monkeypatch):
    (tmp_path / "diffusers" / "sd15-inpaint").mkdir(parents=True)
    (tmp_path / "diffusers" / "sd15-inpaint" / "model_index.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "sdxl_inpaint.safetensors").write_bytes(b"x")
    monkeypatch.setenv(comfy_env.MODELS_ENV, str(tmp_path))
    choices = inpainter_choices()
    assert choices[:2] == ["opencv-telea", "opencv-ns"]
    assert "diffusers/sd15-inpaint" in choices and "checkpoints/sdxl_inpaint.safetensors" in choices
    assert PALComfyInpainter.INPUT_TYPES()["required"]["sampler_name"][0]  # listed even outside ComfyUI
