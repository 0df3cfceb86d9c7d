"""The refinement and inpainter nodes on real tensors: shapes, values, identity, errors, SEGS."""

from __future__ import annotations

import json
import types

import pytest
import torch

from pal_core import load_detector
from pal_core.refinement.inpainters import Inpainter, available_weight_free, default_weight_free
from pal_core.refinement.inpainters.diffusers import DiffusersInpainter
from pal_core.verdicts import fix_line
from pal_nodes import comfy_env, inpainting
from pal_nodes.inpainting import (PALComfyInpainter, PALLoadDiffusersInpainter, PALLoadInpainter,
                                  PALLoadOpenCVInpainter, diffusion_choices, inpainter_choices)
from pal_nodes.refinement import (PALAutoFix, PALAutoFixV2, PALComposite, PALConnectedComponentCrop, PALCropsToSEGS,
                                  PALZoomInpaint, PALZoomInpaintV2, mask_for_images)


class Identity(Inpainter):
    """Returns the crops unchanged: compositing must then give back the input exactly."""

    name = "identity"

    def _inpaint(self, crops, masks, prompts, seeds):
        return crops.clone()


class Recorder(Inpainter):
    """Paints masked pixels a flat colour and records the seeds it was given."""

    name = "recorder"

    def __init__(self, resolution=None):
        self.seeds: list[int] = []
        self.prompts: list[str] = []
        self.sizes: list[tuple] = []
        self.resolution = resolution

    def _inpaint(self, crops, masks, prompts, seeds):
        self.seeds += seeds
        self.prompts += prompts
        self.sizes.append(tuple(crops.shape[1:3]))
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
    fixed = PALZoomInpaintV2().inpaint(crops, crop_masks, Identity(), 0, plan)["result"][0]
    out, blend = PALComposite().composite(images, fixed, plan, 0.06, False)
    assert torch.equal(out, images)
    assert blend.shape == (3, 256, 320) and blend[0].sum() == 0 and blend[2].sum() > 0


def test_zoom_inpaint_seeds_and_composite_changes_only_blend_region():
    images, mask = blob_masks()
    crops, crop_masks, plan = PALConnectedComponentCrop().crop(images, mask, **CROP_ARGS)
    recorder = Recorder()
    fixed = PALZoomInpaint().inpaint(crops, crop_masks, recorder, "a prompt", 10, plan)["result"][0]
    assert recorder.seeds == [10, 10, 11, 12]  # seed + region index within its own image
    assert recorder.prompts == ["a prompt"] * 4  # the deprecated node still passes its prompt
    out, blend = PALComposite().composite(images, fixed, plan, 0.06, False)
    outside = blend == 0
    assert torch.equal(out[outside], images[outside])
    assert (out[1, 104, 156] - torch.tensor([0.0, 1.0, 0.0])).abs().max() < 1e-4  # centre of the region repainted
    without_plan = Recorder()
    PALZoomInpaintV2().inpaint(crops, crop_masks, without_plan, 10)
    assert without_plan.seeds == [10, 11, 12, 13]


def test_empty_and_mismatched_masks():
    images = torch.rand(2, 40, 60, 3)
    crops, crop_masks, plan = PALConnectedComponentCrop().crop(images, torch.zeros(2, 40, 60), **CROP_ARGS)
    assert crops.shape[0] == 0 and len(plan) == 0
    fixed = PALZoomInpaint().inpaint(crops, crop_masks, Identity(), "", 0, plan)["result"][0]
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
    (inpainter,) = PALLoadOpenCVInpainter().load("telea", 0.0)
    images = torch.rand(2, 64, 80, 3)
    out = PALAutoFixV2().fix(images, detector, inpainter, 0, 0.5, 1.5, 64, 0.06, False, True)
    fixed, artifact_mask, blend, report, summary = out["result"]
    assert fixed.shape == images.shape and artifact_mask.shape == blend.shape == (2, 64, 80)
    assert torch.equal(artifact_mask.bool(), detector.mask(images))
    outside = blend == 0
    assert torch.equal(fixed[outside], images[outside])
    parsed = json.loads(report)
    assert len(parsed) == 2 and {"par_before", "par_after", "regions"} <= set(parsed[0])
    assert out["ui"]["par"] == [image["par_after"] for image in parsed]
    assert out["ui"]["text"] == [summary]  # shown on the node
    lines = summary.splitlines()
    assert lines[:2] == [fix_line(f"image {i}", parsed[i]) for i in range(2)]
    assert lines[2].startswith("2 images: ")


class SquareDetector:
    """Finds the same 10x10 square in every image (a detector stand-in for refinement)."""

    model = torch.nn.Identity()
    device = torch.device("cpu")

    def predict(self, images, progress=None, threshold=0.5):
        probability = torch.zeros(images.shape[:3])
        probability[:, 20:30, 20:30] = 1.0
        return probability


class MagentaDetector:
    """Calls magenta pixels artifacts; has what the nodes need from a `Detector` (model, device, predict)."""

    model = torch.nn.Identity()
    device = torch.device("cpu")

    def predict(self, images, progress=None, threshold=0.5):
        if progress is not None:
            progress(images.shape[0], images.shape[0])
        r, g, b = images.unbind(-1)
        return ((r > 0.9) & (g < 0.1) & (b > 0.9)).float()


def test_auto_fix_crops_at_the_inpainters_own_size_unless_told():
    images = torch.rand(1, 64, 80, 3)
    own_size = Recorder(resolution=96)
    out = PALAutoFixV2().fix(images, SquareDetector(), own_size, 5, 0.5, 1.5, 0, 0.06, False, False)
    assert own_size.sizes == [(96, 96)] and own_size.seeds == [5] and own_size.prompts == [""]
    told = Recorder(resolution=96)
    PALAutoFixV2().fix(images, SquareDetector(), told, 5, 0.5, 1.5, 64, 0.06, False, False)
    assert told.sizes == [(64, 64)]
    anything = Recorder()  # OpenCV works at any size: the paper's 512
    PALAutoFixV2().fix(images, SquareDetector(), anything, 5, 0.5, 1.5, 0, 0.06, False, False)
    assert anything.sizes == [(512, 512)]
    assert out["ui"]["text"] == [out["result"][4]] and out["ui"]["par"] == [round(100 / (64 * 80), 6)]


def test_deprecated_nodes_keep_their_inputs_and_results():
    for old, new in [(PALAutoFix, PALAutoFixV2), (PALZoomInpaint, PALZoomInpaintV2)]:
        assert old.DEPRECATED and old.CATEGORY == "PAL/deprecated" and not getattr(new, "DEPRECATED", False)
        old_inputs, new_inputs = list(old.INPUT_TYPES()["required"]), list(new.INPUT_TYPES()["required"])
        assert old_inputs[3] == "prompt" and old_inputs[:3] + old_inputs[4:] == new_inputs
    # saved workflows hold widget values by position: the old nodes' widgets are as they were
    assert [n for n, (kind, _) in PALAutoFix.INPUT_TYPES()["required"].items() if kind in ("STRING", "INT", "FLOAT",
            "BOOLEAN")] == ["prompt", "seed", "threshold", "zoom", "target_size", "feather", "color_match", "redetect"]
    assert list(PALLoadInpainter.INPUT_TYPES()["required"]) == ["inpainter", "negative_prompt", "steps", "guidance",
                                                               "strength", "device", "precision"]
    images = torch.rand(1, 64, 80, 3)
    old, new = Recorder(), Recorder()
    old_out = PALAutoFix().fix(images, SquareDetector(), old, "a hand", 3, 0.5, 1.5, 64, 0.06, False, False)
    new_out = PALAutoFixV2().fix(images, SquareDetector(), new, 3, 0.5, 1.5, 64, 0.06, False, False)
    assert old.prompts == ["a hand"] and new.prompts == [""] and old.sizes == new.sizes
    assert torch.equal(old_out["result"][0], new_out["result"][0])
    (old_opencv,) = PALLoadInpainter().load("opencv-ns", "", 30, 7.5, 0.99, "cpu", "fp32")
    (new_opencv,) = PALLoadOpenCVInpainter().load("ns", 0.0)
    crops, masks = torch.rand(1, 32, 32, 3), torch.zeros(1, 32, 32)
    masks[:, 8:16, 8:16] = 1
    assert torch.equal(old_opencv.inpaint(crops, masks), new_opencv.inpaint(crops, masks))


class FakePipeline:
    """Stands in for a diffusers inpainting pipeline: records prompts, paints masked pixels grey."""

    device = torch.device("cpu")
    vae_scale_factor = 8

    def __init__(self):
        self.unet = type("UNet", (), {"config": type("Config", (), {"sample_size": 128})})()
        self.prompts: list = []

    def __call__(self, prompt, image, **settings):
        self.prompts += prompt
        return type("Output", (), {"images": image * 0 + 0.5})()


def test_diffusers_loader_holds_the_prompt_and_loads_the_pipeline_once(monkeypatch):
    loads = []

    def fake_make(spec, device=None, dtype=None):
        loads.append((spec, str(device), dtype))
        return DiffusersInpainter(FakePipeline(), name="diffusers:fake")

    monkeypatch.setattr(inpainting, "make_inpainter", fake_make)
    monkeypatch.setattr(inpainting, "resolve_diffusers_path", lambda choice: "/models/" + choice)
    monkeypatch.setattr(inpainting, "_PIPELINES", {})
    (hands,) = PALLoadDiffusersInpainter().load("diffusers/sdxl", "a hand", "blurry", 20, 5.0, 0.9, "cpu", "auto")
    (cats,) = PALLoadDiffusersInpainter().load("diffusers/sdxl", "a cat", "", 30, 7.5, 0.99, "cpu", "auto")
    assert loads == [("diffusers:/models/diffusers/sdxl", "cpu", "fp32")]  # auto precision: fp32 on the CPU
    assert hands.pipeline is cats.pipeline and hands.resolution == 1024
    assert (hands.prompt, hands.negative_prompt, hands.steps, hands.guidance) == ("a hand", "blurry", 20, 5.0)
    crops, masks = torch.rand(2, 16, 16, 3), torch.ones(2, 16, 16)
    hands.inpaint(crops, masks, ["", "a finger"], [0, 1])
    assert hands.pipeline.prompts == ["a hand", "a finger"]  # the caller's prompt wins where it gives one
    assert list(PALLoadDiffusersInpainter.INPUT_TYPES()["required"]) == [
        "model", "prompt", "negative_prompt", "steps", "guidance", "strength", "device", "precision"]
    assert list(PALLoadOpenCVInpainter.INPUT_TYPES()["required"]) == ["method", "radius"]


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
    fixed, _, _, report, summary = PALAutoFix().fix(*args)["result"]
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
    out = PALZoomInpaintV2().inpaint(crops, crop_masks, Recorder(), 5, plan)
    _, summary = out["result"]
    assert out["ui"] == {"text": [summary]}
    lines = summary.splitlines()
    assert len(lines) == 4 and lines[0].startswith("image 1 region #0: ") and "seed 5" in lines[0]
    assert lines[3].startswith("image 2 region #2: ") and "seed 7" in lines[3] and "mean change" in lines[3]
    _, summary = PALZoomInpaint().inpaint(crops, crop_masks, Identity(), "", 5, plan)["result"]
    assert all("unchanged" in line for line in summary.splitlines())


def test_inpainter_choices_list_model_folders(tmp_path, monkeypatch):
    (tmp_path / "diffusers" / "sd15-inpaint").mkdir(parents=True)
    (tmp_path / "diffusers" / "sd15-inpaint" / "model_index.json").write_text("{}")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "sdxl_inpaint.safetensors").write_bytes(b"x")
    monkeypatch.setenv(comfy_env.MODELS_ENV, str(tmp_path))
    choices = inpainter_choices()
    assert choices[:2] == list(available_weight_free()[:2]) and choices[0] == default_weight_free()
    assert choices[len(available_weight_free()):] == diffusion_choices()
    assert PALLoadDiffusersInpainter.INPUT_TYPES()["required"]["model"][0] == diffusion_choices()
    assert PALLoadDiffusersInpainter.VALIDATE_INPUTS("diffusers/sd15-inpaint") is True
    assert "models/diffusers/<name>/" in PALLoadDiffusersInpainter.VALIDATE_INPUTS("")
    methods = PALLoadOpenCVInpainter.INPUT_TYPES()["required"]["method"][0]
    assert ["opencv-" + m for m in methods] == list(available_weight_free())
    assert PALLoadOpenCVInpainter().load(methods[0], 0.0)[0].name == default_weight_free()
    assert PALLoadOpenCVInpainter().load("telea", 5.0)[0].radius == 5.0
    assert "diffusers/sd15-inpaint" in choices and "checkpoints/sdxl_inpaint.safetensors" in choices
    assert PALComfyInpainter.INPUT_TYPES()["required"]["sampler_name"][0]  # listed even outside ComfyUI
