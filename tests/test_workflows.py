"""Every example workflow the pack ships: those that need no checkpoint run headless end to end with the
shipped default model, and their UI-format files give the same outputs as their API twins; every one
explains itself (a Note, groups, titled nodes) and has a thumbnail. tests/test_browser.py checks the
same files in ComfyUI's real front end, test_comfy_engine.py on ComfyUI's engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core import load_detector
from pal_core.cli import main
from pal_core.imageio import read_image
from pal_core.workflow import WorkflowValidationError, installed_registry, run_workflow

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
INPUTS = WORKFLOWS / "input"
DETECT = "Detect artifacts in your images"
FIX = "Fix artifacts in your images"
CROP = "Crop artifacts for any inpainter"
GENERATE_FIX = "Generate then auto-fix artifacts"
GENERATE_RANK = "Generate seeds and keep the best by PAR"
RUNNABLE = [DETECT, FIX, CROP]
ARTIFACTS = INPUTS / "dog_synthetic_artifacts.jpg"


def run(path: Path, out: Path):
    return run_workflow(path, input_dir=INPUTS, output_dir=out, engine="builtin", progress=lambda line: None)


def comfyui_only_classes(name: str) -> set[str]:
    return {node["class_type"] for node in api(name).values()} - set(installed_registry())


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def test_every_workflow_has_its_twin_thumbnail_note_and_groups():
    ui_files = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    assert ui_files == sorted(RUNNABLE + [GENERATE_FIX, GENERATE_RANK])
    for name in ui_files:
        assert (WORKFLOWS / "api" / f"{name}.json").is_file()
        with Image.open(WORKFLOWS / f"{name}.jpg") as thumbnail:
            assert thumbnail.format == "JPEG" and max(thumbnail.size) >= 256
        ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
        assert {"nodes", "links", "version", "groups"} <= set(ui) and ui["groups"]
        notes = [n for n in ui["nodes"] if n["type"] == "Note"]
        assert len(notes) == 1 and len(notes[0]["widgets_values"][0]) > 200
        types = [n["type"] for n in ui["nodes"]]
        assert not {"PALAutoFix", "PALZoomInpaint", "PALLoadInpainter"} & set(types), "examples use current nodes"
    for name in (GENERATE_FIX, GENERATE_RANK):  # the two prompts say which is which
        titles = {node.get("_meta", {}).get("title") for node in api(name).values() if node["class_type"] == "CLIPTextEncode"}
        assert titles == {"Positive", "Negative"}


def test_the_generation_examples_start_from_a_checkpoint_and_a_batch_of_seeds():
    fix, rank = api(GENERATE_FIX), api(GENERATE_RANK)
    for graph in (fix, rank):
        chain = ["CheckpointLoaderSimple", "EmptyLatentImage", "KSampler", "VAEDecode"]
        assert all(any(node["class_type"] == kind for node in graph.values()) for kind in chain)
    decoded = next(k for k, n in fix.items() if n["class_type"] == "VAEDecode")
    auto_fix = next(n for n in fix.values() if n["class_type"] == "PALAutoFixV2")
    inpainter = fix[auto_fix["inputs"]["inpainter"][0]]
    assert auto_fix["inputs"]["images"] == [decoded, 0] and auto_fix["inputs"]["target_size"] == 0
    assert inpainter["class_type"] == "PALComfyInpainter"  # the generation's own model and prompts
    sampler = next(n for n in fix.values() if n["class_type"] == "KSampler")
    assert inpainter["inputs"]["positive"] == sampler["inputs"]["positive"]
    latent = next(n for n in rank.values() if n["class_type"] == "EmptyLatentImage")
    ranking = next(n for n in rank.values() if n["class_type"] == "PALRankByPAR")
    assert latent["inputs"]["batch_size"] > ranking["inputs"]["top_k"] >= 1


@pytest.mark.parametrize("name", RUNNABLE)
def test_ui_and_api_twins_give_the_same_files(name, tmp_path, monkeypatch, capsys):
    """The UI file runs with a plain `pal run FILE` (its images are found in input/ beside it)."""
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(WORKFLOWS / f"{name}.json"), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ui_files = [Path(p) for p in summary["files"]]
    assert summary["engine"] == "builtin" and summary["format"] == "ui"
    twin = run(WORKFLOWS / "api" / f"{name}.json", tmp_path / "api")
    assert twin.source_format == "api"
    assert ui_files and len(ui_files) == len(twin.files)
    for a, b in zip(sorted(ui_files), sorted(twin.files)):
        assert a.relative_to(tmp_path / "output") == b.relative_to(tmp_path / "api")
        assert np.array_equal(pixels(a), pixels(b))


def test_detect_example_finds_the_synthetic_artifacts_and_shows_par(tmp_path):
    result = run(WORKFLOWS / "api" / f"{DETECT}.json", tmp_path)
    image = read_image(ARTIFACTS)
    expected = load_detector(device="cpu", dtype="fp32").mask(image.unsqueeze(0))[0].numpy()
    assert expected.mean() > 0.005  # the example image gives the detector something to find
    assert result.output("3", 3) == [pytest.approx(float(expected.mean()), abs=1e-6)]
    assert result.ui("3")["par"] == result.output("3", 3)
    assert result.ui("3")["text"] == [f"#0  PAR {expected.mean():.4f}  ({expected.mean():.1%} of pixels)"]
    overlay = pixels(tmp_path / "pal" / "overlay_00001_.png").astype(int)
    original = np.round(image.numpy() * 255).astype(int)
    assert np.array_equal(overlay[~expected], original[~expected]) and not np.array_equal(overlay, original)


@pytest.mark.parametrize("name, fixed_node, blend", [(FIX, "4", ("4", 2)), (CROP, "7", ("7", 1))])
def test_fixes_change_only_the_blended_pixels(name, fixed_node, blend, tmp_path):
    result = run(WORKFLOWS / "api" / f"{name}.json", tmp_path)
    original = read_image(ARTIFACTS)
    fixed = result.output(fixed_node, 0)[0][0]
    blend_mask = result.output(*blend)[0][0]
    assert fixed.shape == original.shape and blend_mask.shape == original.shape[:2]
    outside = blend_mask == 0
    assert torch.equal(fixed[outside], original[outside])
    if name == CROP:  # nothing checks the crops' fixes here: Composite puts them back
        assert (blend_mask > 0).any()
    if name == FIX:  # the example shows a real fix: the synthetic blotch is found, repainted and the fix kept
        detector = load_detector(device="cpu", dtype="fp32")
        par_before, par_after = (float(detector.par(image.unsqueeze(0))[0]) for image in (original, fixed))
        assert par_before > 0.005 and par_after < par_before / 10, (par_before, par_after)
        assert (blend_mask > 0).sum() > 1000  # the blotch's region (about 2,000 artifact pixels) was blended in


def test_examples_the_builtin_runtime_cannot_run_say_to_use_comfyui(tmp_path):
    needing = {name: comfyui_only_classes(name) for name in sorted(p.stem for p in WORKFLOWS.glob("*.json"))}
    assert set(RUNNABLE) == {name for name, classes in needing.items() if not classes}
    generation = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode"}
    assert needing[GENERATE_FIX] == needing[GENERATE_RANK] == generation
    for name in (GENERATE_FIX, GENERATE_RANK):
        with pytest.raises(WorkflowValidationError) as error:
            run(WORKFLOWS / f"{name}.json", tmp_path)
        assert set(error.value.missing_node_types()) == generation
        assert "pass --comfyui DIR" in str(error.value)


SAVED_BEFORE = sorted(p for p in (Path(__file__).parent / "data" / "workflows" / "v0.1").glob("*.json")
                      if not p.name.endswith(".api.json"))


@pytest.mark.parametrize("saved", SAVED_BEFORE, ids=lambda p: p.stem)
def test_workflows_saved_with_the_first_nodes_still_run(saved, tmp_path):
    """Files saved before the inpainter loader split and the prompt move (deprecated ids, old widgets) run as
    their API twins do, their values read in place."""
    assert len(SAVED_BEFORE) == 2
    ui = run(saved, tmp_path / "ui")
    twin = run(saved.with_name(saved.stem + ".api.json"), tmp_path / "api")
    # optional widgets added since v0.1 get their defaults in the UI file, as the frontend gives them
    added_since = {"allow_torchscript": False}
    for node_id, node in ui.prompt.items():
        for name, default in added_since.items():
            if name not in twin.prompt[node_id]["inputs"] and node["inputs"].get(name, default) == default:
                node["inputs"].pop(name, None)
    assert ui.prompt == twin.prompt
    assert {node["class_type"] for node in ui.prompt.values()} & {"PALAutoFix", "PALZoomInpaint", "PALLoadInpainter"}
    assert ui.files and len(ui.files) == len(twin.files)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(sorted(ui.files), sorted(twin.files)))
