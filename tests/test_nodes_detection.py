"""The detection nodes, called as ComfyUI calls them, on real tensors with a tiny real detector."""

from __future__ import annotations

import json

import pytest
import torch

import pal_nodes
from pal_nodes import comfy_env
from pal_nodes.detection import PALDetectArtifacts, PALLoadDetector, PALPARScore, PALRankByPAR


@pytest.fixture
def models_dir(tmp_path, monkeypatch, tiny_detector_file):
    """A ComfyUI-like models folder outside ComfyUI, holding the tiny detector."""
    (tmp_path / "pal4vst").mkdir()
    (tmp_path / "pal4vst" / "tiny.safetensors").write_bytes(open(tiny_detector_file, "rb").read())
    monkeypatch.setenv(comfy_env.MODELS_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture
def detector(models_dir):
    return PALLoadDetector().load("tiny.safetensors", "cpu", "fp32", 512)["result"][0]


def test_every_node_is_described_and_every_input_has_a_tooltip():
    assert pal_nodes.NODE_CLASS_MAPPINGS and set(pal_nodes.NODE_CLASS_MAPPINGS) == set(pal_nodes.NODE_DISPLAY_NAME_MAPPINGS)
    for class_id, cls in pal_nodes.NODE_CLASS_MAPPINGS.items():
        assert class_id.startswith("PAL") and cls.CATEGORY.startswith("PAL") and cls.DESCRIPTION
        assert callable(getattr(cls(), cls.FUNCTION))
        assert len(cls.RETURN_TYPES) == len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))
        for section in cls.INPUT_TYPES().values():
            for name, spec in section.items():
                assert len(spec) == 2 and spec[1].get("tooltip"), f"{class_id}.{name} has no tooltip"


def test_nodes_sit_in_subcategories_and_every_choice_has_a_default():
    categories = {cls.CATEGORY for cls in pal_nodes.NODE_CLASS_MAPPINGS.values()}
    assert categories == {"PAL/detect", "PAL/rank", "PAL/fix", "PAL/fix/inpainters", "PAL/deprecated"}
    for class_id, cls in pal_nodes.NODE_CLASS_MAPPINGS.items():
        assert getattr(cls, "DEPRECATED", False) == (cls.CATEGORY == "PAL/deprecated"), class_id
        for section in cls.INPUT_TYPES().values():
            for name, (kind, options) in section.items():
                if isinstance(kind, list) and kind:  # a combo: the frontend shows "undefined" without a default
                    assert options.get("default") in kind, f"{class_id}.{name}"


def test_loader_lists_models_folder_and_loads(models_dir, detector):
    choices = PALLoadDetector.INPUT_TYPES()["required"]["model"][0]
    assert choices[0] == "default" and "tiny.safetensors" in choices
    assert detector.name == "tiny" and detector.device.type == "cpu" and detector.input_size == 512
    native = PALLoadDetector().load("tiny.safetensors", "cpu", "fp32", 0)["result"][0]
    assert native.input_size is None and native.model is detector.model  # loaded once, reused
    with pytest.raises(FileNotFoundError, match="models/pal4vst"):
        PALLoadDetector().load("missing.safetensors", "cpu", "fp32", 512)
    with pytest.raises(ValueError, match="float16 is not supported on the CPU"):
        PALLoadDetector().load("tiny.safetensors", "cpu", "fp16", 512)
    assert PALLoadDetector.INPUT_TYPES()["required"]["precision"][1]["default"] == "auto"
    auto, info = PALLoadDetector().load("tiny.safetensors", "cpu", "auto", 512)["result"]
    guard = ", fp32 where the guard finds the mask undecided" if auto.guarded else ""  # bf16 units: guarded
    assert f"(safetensors, {auto.precision} on cpu{guard})" in info  # the precision auto chose is shown


def test_the_loader_runs_a_model_at_the_size_saved_in_its_file_by_default(models_dir):
    """A distilled student saved at 256 runs at 256 from the node as everywhere; older workflows keep theirs."""
    from conftest import make_tiny_model
    from pal_core import DetectorCheckpoint, Preprocess, save_detector_file

    save_detector_file(DetectorCheckpoint(make_tiny_model(), "student", Preprocess(input_size=256)),
                       models_dir / "pal4vst" / "student.safetensors")
    size = PALLoadDetector.INPUT_TYPES()["required"]["input_size"]
    assert size[1]["default"] == -1 and size[1]["min"] == -1
    load = PALLoadDetector().load
    assert load("student.safetensors", "cpu", "fp32", -1)["result"][0].input_size == 256
    assert load("student.safetensors", "cpu", "fp32", 512)["result"][0].input_size == 512  # a saved 512 stays 512
    assert load("student.safetensors", "cpu", "fp32", 0)["result"][0].input_size is None


def test_detect_outputs(detector):
    images = torch.rand(3, 48, 64, 3)
    out = PALDetectArtifacts().detect(detector, images, 0.5)
    mask, probability, preview, par = out["result"]
    assert out["ui"]["par"] == par and out["ui"]["text"] == ["\n".join(
        f"#{i}  PAR {p:.4f}  ({p:.1%} of pixels)" for i, p in enumerate(par))]
    assert mask.shape == probability.shape == (3, 48, 64) and preview.shape == images.shape
    assert torch.equal(mask, (probability > 0.5).float())
    assert torch.allclose(probability, detector.predict(images))
    assert par == [round(float(m.mean()), 6) for m in mask]
    untouched = mask == 0
    assert torch.equal(preview[untouched], images[untouched])
    assert PALDetectArtifacts.OUTPUT_IS_LIST == (False, False, False, True)
    with pytest.raises(ValueError, match="empty"):
        PALDetectArtifacts().detect(detector, torch.zeros(0, 8, 8, 3), 0.5)


def test_par_score_from_mask_or_images(detector):
    mask = torch.zeros(2, 10, 10)
    mask[0, :5] = 1.0
    out = PALPARScore().score(0.5, mask=mask)
    scores, report = out["result"]
    assert out["ui"] == {"text": ["#0  PAR 0.5000  (50.0% of pixels)\n#1  PAR 0.0000  (0.0% of pixels)"],
                         "par": [0.5, 0.0]}
    assert scores == [0.5, 0.0] and json.loads(report) == [{"index": 0, "par": 0.5}, {"index": 1, "par": 0.0}]
    images = torch.rand(2, 40, 40, 3)
    scores, _ = PALPARScore().score(0.5, images=images, detector=detector)["result"]
    assert scores == pytest.approx(detector.par(images).tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="needs either a mask, or images and a detector"):
        PALPARScore().score(0.5, images=images)


def test_rank_by_par_sorts_and_filters(detector):
    images = torch.rand(5, 32, 32, 3)
    par = detector.par(images)
    out = PALRankByPAR().rank(detector, images, 0, 1.0, 0.5)
    kept_images, masks, indices, scores, report = out["result"]
    assert out["ui"]["par"] == [round(float(p), 6) for p in par]  # every image's, in batch order
    assert out["ui"]["text"][0].splitlines() == [f"#{i}  PAR {par[i]:.4f}  kept" for i in indices]
    assert indices == sorted(range(5), key=lambda i: (float(par[i]), i))
    assert scores == sorted(scores) and torch.equal(kept_images[0], images[indices[0]])
    assert masks.shape == (5, 32, 32)
    top2 = PALRankByPAR().rank(detector, images, 2, 1.0, 0.5)["result"]
    assert [line.endswith("kept") for line in PALRankByPAR().rank(detector, images, 2, 1.0, 0.5)["ui"]["text"][0]
            .splitlines()] == [True, True, False, False, False]
    assert top2[2] == indices[:2] and top2[0].shape[0] == 2
    limit = float(par.min())
    under = PALRankByPAR().rank(detector, images, 0, limit, 0.5)["result"]
    assert all(s <= limit + 1e-6 for s in under[3]) and len(under[2]) >= 1
    json.loads(under[4])


def test_rank_by_par_empty_selection_is_a_message(detector):
    images = torch.rand(2, 32, 32, 3)
    if float(detector.par(images).min()) == 0.0:
        pytest.skip("this random detector finds nothing; the empty case needs PAR > 0")
    out = PALRankByPAR().rank(detector, images, 0, 0.0, 0.5)
    kept_images, masks, indices, scores, report = out["result"]
    assert kept_images.shape[0] == 0 and indices == [] and scores == []
    assert "raise max_par" in json.loads(report)["message"]
    assert out["ui"]["text"][0].splitlines()[-1] == json.loads(report)["message"]


def test_detect_says_which_precision_made_the_maps_when_auto_guards_them(models_dir):
    """Below fp32 with the guard (precision auto on bf16 hardware) the node says how many maps fp32 made:
    at 0.55 every tiny-model map is undecided and goes back to fp32; at 0.3 bf16's maps stand."""
    from pal_core import load_detector
    from pal_core.detect.detector import PrecisionGuard

    from nodes.display import precision_lines

    guarded = load_detector(models_dir / "pal4vst" / "tiny.safetensors", device="cpu", dtype="bf16",
                            guard=PrecisionGuard(budget=float("inf")))  # every image tried: no cost bound
    images = torch.rand(3, 48, 64, 3)
    text = PALDetectArtifacts().detect(guarded, images, 0.55)["ui"]["text"][0]
    assert text.endswith("\nprecision: fp32 for 3 images (fp32 where the guard kept fp32's masks or bounded its cost)")
    assert "precision: bf16 for 3 images" in PALDetectArtifacts().detect(guarded, images, 0.3)["ui"]["text"][0]
    assert precision_lines(["bf16", "fp32", None, "bf16"], True)[0].startswith("precision: bf16 for 2 images, fp32 for 1 image (")
    assert precision_lines(["fp32"], False) == []  # fp32 or an explicit bf16: nothing to say
