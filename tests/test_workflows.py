"""Every example workflow the pack ships runs headless end to end (those that need no external weights)
with the shipped default model, with a plain `pal run FILE`, and its UI-format file gives the same
outputs as its API twin. (On ComfyUI's engine: test_comfy_engine.py.)"""

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
from pal_core.workflow.core_nodes import to_comfy_uint8

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
INPUTS = WORKFLOWS / "input"
RUNNABLE = ["pal_detect_overlay", "pal_rank_seed_batch", "pal_autofix_opencv", "pal_crop_inpaint_composite"]


def run(path: Path, out: Path):
    return run_workflow(path, input_dir=INPUTS, output_dir=out, engine="builtin", progress=lambda line: None)


def comfyui_only_classes(name: str) -> set[str]:
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    return {node["class_type"] for node in api.values()} - set(installed_registry())


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_every_workflow_has_its_twin_and_thumbnail():
    ui_files = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    assert set(RUNNABLE) | {"pal_autofix_checkpoint"} == set(ui_files)
    for name in ui_files:
        assert (WORKFLOWS / "api" / f"{name}.json").is_file() and (WORKFLOWS / f"{name}.jpg").is_file()
        ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
        assert {"nodes", "links", "version"} <= set(ui)


@pytest.mark.parametrize("name", RUNNABLE)
def test_ui_and_api_twins_give_the_same_files(name, tmp_path, monkeypatch, capsys):
    """The UI file runs with a plain `pal run FILE` (its images are found in input/ beside it)."""
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(WORKFLOWS / f"{name}.json"), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ui_files = [Path(p) for p in summary["files"]]
    assert summary["engine"] == "builtin" and summary["format"] == "ui"
    api = run(WORKFLOWS / "api" / f"{name}.json", tmp_path / "api")
    assert api.source_format == "api"
    assert ui_files and len(ui_files) == len(api.files)
    for a, b in zip(sorted(ui_files), sorted(api.files)):
        assert a.relative_to(tmp_path / "output") == b.relative_to(tmp_path / "api")
        assert np.array_equal(pixels(a), pixels(b))


def test_detect_overlay_outputs(tmp_path):
    result = run(WORKFLOWS / "api" / "pal_detect_overlay.json", tmp_path)
    image = read_image(INPUTS / "dog_sdxl_turbo.jpg")
    mask = pixels(tmp_path / "pal" / "mask_00001_.png")
    assert mask.shape[:2] == image.shape[:2] and set(np.unique(mask)) <= {0, 255}
    expected = load_detector(device="cpu").mask(image.unsqueeze(0))[0].numpy()
    assert np.array_equal(mask[..., 0] == 255, expected)
    par = result.output("7", 0)
    assert par == [pytest.approx(float(expected.mean()), abs=1e-6)]
    overlay = pixels(tmp_path / "pal" / "overlay_00001_.png").astype(int)
    original = np.round(image.numpy() * 255).astype(int)
    assert np.array_equal(overlay[~expected], original[~expected])


def test_rank_keeps_the_image_with_the_lowest_par(tmp_path):
    result = run(WORKFLOWS / "api" / "pal_rank_seed_batch.json", tmp_path)
    batch = result.output("3", 0)[0]  # ImageBatch resizes the second image to the first's size
    par = load_detector(device="cpu").par(batch)
    best = int(torch.argmin(par))
    assert result.output("5", 2) == [best]
    saved = pixels(tmp_path / "pal" / "best_00001_.png")
    assert np.array_equal(saved, to_comfy_uint8(batch[best]))  # SaveImage converts as ComfyUI does


@pytest.mark.parametrize("name, fixed_node, blend", [("pal_autofix_opencv", "4", ("4", 2)),
                                                      ("pal_crop_inpaint_composite", "7", ("7", 1))])
def test_fixes_change_only_the_blended_pixels(name, fixed_node, blend, tmp_path):
    result = run(WORKFLOWS / "api" / f"{name}.json", tmp_path)
    loaded = next(node for node_id, node in result.prompt.items() if node["class_type"] == "LoadImage")
    original = read_image(INPUTS / loaded["inputs"]["image"])
    fixed = result.output(fixed_node, 0)[0][0]
    blend_mask = result.output(*blend)[0][0]
    assert fixed.shape == original.shape and blend_mask.shape == original.shape[:2]
    outside = blend_mask == 0
    assert torch.equal(fixed[outside], original[outside])


def test_examples_the_builtin_runtime_cannot_run_say_to_use_comfyui(tmp_path):
    needing = {name: comfyui_only_classes(name) for name in sorted(p.stem for p in WORKFLOWS.glob("*.json"))}
    assert set(RUNNABLE) == {name for name, classes in needing.items() if not classes}
    assert needing["pal_autofix_checkpoint"] == {"CheckpointLoaderSimple", "CLIPTextEncode"}
    for name, classes in needing.items():
        if classes:
            with pytest.raises(WorkflowValidationError) as error:
                run(WORKFLOWS / f"{name}.json", tmp_path)
            assert set(error.value.missing_node_types()) == classes
            assert "pass --comfyui DIR" in str(error.value)
