"""The pack in a real ComfyUI (0.3.64), installed as ComfyUI-Manager installs it: the repository cloned
into custom_nodes/pal-nodes and its requirements.txt installed, the project itself not pip-installed.
The harness is tests/comfy_host.py; one server serves the whole session."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_host import PACK_FOLDER, ROOT
from tiny_sd15 import write_tiny_sd15
from pal_core.workflow import run_workflow
from pal_nodes import NODE_CLASS_MAPPINGS

pytestmark = pytest.mark.comfyui

WORKFLOWS = ROOT / "workflows"
RUNNABLE = ["pal_detect_overlay", "pal_rank_seed_batch", "pal_autofix_opencv", "pal_crop_inpaint_composite"]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
FRONTEND_ONLY = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}


def probe(server) -> dict:
    pack = str(server.base / "custom_nodes" / PACK_FOLDER)
    finished = server.run({"1": {"class_type": "PALHostProbe", "inputs": {"pack_folder": pack}}})
    return json.loads(finished.text("1")[0])


def test_the_comfyui_venv_has_no_pal_core_of_its_own(comfy_install):
    """Else the import test below would not show that the pack finds pal_core in its own folder."""
    result = subprocess.run([str(comfy_install.python), "-c", "import pal_core"], capture_output=True, text=True,
                            cwd="/")
    assert result.returncode != 0, ("ComfyUI's venv can import pal_core by itself (the project is installed in "
                                    "the Python it is layered over); install the project into a venv instead")


def test_pack_imports_from_its_own_folder_and_leaves_sys_path_alone(comfy_server):
    assert comfy_server.import_problems() == [], comfy_server.log_tail()
    assert "IMPORT FAILED" not in comfy_server.log(), comfy_server.log_tail()
    seen = probe(comfy_server)
    pack = comfy_server.base / "custom_nodes" / PACK_FOLDER
    assert Path(seen["pal_core_file"]) == pack / "pal_core" / "__init__.py"
    assert Path(seen["nodes_file"]) == comfy_server.install.source / "nodes.py"  # ComfyUI's own, not ours
    assert seen["pack_on_sys_path"] == []


def test_every_pal_class_is_listed_with_its_inputs(comfy_server):
    info = comfy_server.object_info()
    assert len(NODE_CLASS_MAPPINGS) == 11
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert name in info, f"{name} missing from /object_info"
        listed = info[name]
        declared = cls.INPUT_TYPES()
        assert listed["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        for section in ("required", "optional"):
            assert list(listed["input"].get(section, {})) == list(declared.get(section, {})), (name, section)
        assert list(listed["output"]) == list(cls.RETURN_TYPES)
        assert listed["category"] == cls.CATEGORY


def test_example_workflows_are_listed_as_templates_with_thumbnails(comfy_server):
    names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
    listed = comfy_server.get("/api/workflow_templates")
    assert sorted(listed[PACK_FOLDER]) == names
    for name in names:
        status, body = comfy_server.request(f"/api/workflow_templates/{PACK_FOLDER}/{name}.json")
        assert status == 200 and json.loads(body) == json.loads((WORKFLOWS / f"{name}.json").read_text())
        status, body = comfy_server.request(f"/api/workflow_templates/{PACK_FOLDER}/{name}.jpg")
        assert status == 200 and body == (WORKFLOWS / f"{name}.jpg").read_bytes()


@pytest.mark.parametrize("name", RUNNABLE)
def test_example_workflow_runs_in_comfyui_as_it_does_headless(name, comfy_server, tmp_path):
    """Queued through /prompt, each API twin runs to its outputs; the images equal `pal run`'s."""
    prompt = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    finished = comfy_server.run(prompt)
    headless = run_workflow(WORKFLOWS / "api" / f"{name}.json", input_dir=WORKFLOWS / "input", output_dir=tmp_path,
                            progress=lambda line: None)
    saved = [node_id for node_id, node in prompt.items() if node["class_type"] == "SaveImage"]
    assert saved
    ours = sorted(headless.files)
    theirs = sorted(path for node_id in saved for path in finished.images(node_id))
    assert len(theirs) == len(ours) > 0
    for comfy_file, headless_file in zip(theirs, ours):
        assert comfy_file.is_file()
        assert comfy_file.name == headless_file.name
        comfy_pixels = np.asarray(Image.open(comfy_file)).astype(int)
        headless_pixels = np.asarray(Image.open(headless_file)).astype(int)
        difference = np.abs(comfy_pixels - headless_pixels)
        # SaveImage truncates 255 * value: a last-bit float difference in a resize (ImageBatch; another thread
        # count or SIMD path) can move a pixel by one level. Anything more is a real difference.
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (comfy_file.name, difference.max(),
                                                                          (difference > 0).mean())


def widget_slots(info: dict) -> list[str | None]:
    """The node's widgets in the order the frontend stores their values; None for frontend-only ones
    (a seed's control_after_generate, an image upload button), which take a value but are never sent."""
    slots = []
    order = info.get("input_order") or {section: list(info["input"].get(section, {})) for section in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if not (isinstance(kind, list) or kind in WIDGET_TYPES) or options.get("forceInput"):
                continue
            slots.append(name)
            if kind == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
                slots.append(None)
            if options.get("image_upload"):
                slots.append(None)
    return slots


def graph_meaning(ui: dict, info: dict) -> dict:
    """The API prompt a UI-format graph stands for, read with the real host's node definitions."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        assert node["type"] not in FRONTEND_ONLY and node.get("mode", 0) == 0, "examples use plain, active nodes"
        inputs = {}
        slots = widget_slots(info[node["type"]])
        values = node.get("widgets_values", [])
        assert len(values) == len(slots), (node["id"], node["type"], values, slots)
        inputs.update({name: value for name, value in zip(slots, values) if name is not None})
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                _, origin, slot, target, _, _ = links[entry["link"]]
                assert target == node["id"]
                inputs[entry["name"]] = [str(origin), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("name", sorted(p.stem for p in WORKFLOWS.glob("*.json")))
def test_api_twin_is_what_the_ui_graph_means(name, comfy_server):
    info = comfy_server.object_info()
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    twin = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert graph_meaning(ui, info) == twin


def image_the_detector_flags(path: Path) -> np.ndarray:
    """An example image with a synthetic artifact the shipped model finds (checked here), saved as PNG."""
    from pal_core import load_detector
    from pal_core.artifacts import synthesize

    with Image.open(WORKFLOWS / "input" / "dog_sdxl_turbo.jpg") as img:
        picture = np.asarray(img.convert("RGB")).copy()
    for seed in range(8):
        edited, _, kinds = synthesize(picture, np.random.default_rng(seed), 1)
        found = load_detector(device="cpu").mask(torch.from_numpy(edited).float().div(255).unsqueeze(0))[0]
        if kinds and int(found.sum()) >= 256:
            Image.fromarray(edited).save(path)
            return edited
    raise AssertionError("no seed gave an artifact the shipped model finds")


def test_checkpoint_workflow_samples_the_found_region_with_comfyuis_sampler(comfy_server):
    """pal_autofix_checkpoint: CheckpointLoaderSimple (a random tiny SD1.5 the test builds) -> CLIP Text
    Encode -> PAL ComfyUI Model Inpainter (InpaintModelConditioning + KSampler) inside Auto Fix."""
    checkpoint = write_tiny_sd15(comfy_server.base / "models" / "checkpoints" / "tiny_sd15_test.safetensors")
    original = image_the_detector_flags(comfy_server.base / "input" / "pal_flagged.png")
    prompt = json.loads((WORKFLOWS / "api" / "pal_autofix_checkpoint.json").read_text())
    loader = next(n for n in prompt.values() if n["class_type"] == "CheckpointLoaderSimple")
    loader["inputs"]["ckpt_name"] = checkpoint.name
    next(n for n in prompt.values() if n["class_type"] == "LoadImage")["inputs"]["image"] = "pal_flagged.png"
    fix_id = next(i for i, n in prompt.items() if n["class_type"] == "PALAutoFix")
    # Small and quick on a CPU; keep every fix (the random model's output would not lower the PAR).
    prompt[fix_id]["inputs"].update(target_size=128, redetect=False)
    next(n for n in prompt.values() if n["class_type"] == "PALComfyInpainter")["inputs"]["steps"] = 2
    prompt["90"] = {"class_type": "MaskToImage", "inputs": {"mask": [fix_id, 2]}}  # the blend mask, to check
    prompt["91"] = {"class_type": "SaveImage", "inputs": {"images": ["90", 0], "filename_prefix": "pal/blend"}}

    finished = comfy_server.run(prompt, timeout=900)
    save_id = next(i for i, n in prompt.items() if n["class_type"] == "SaveImage" and i != "91")
    (fixed_file,) = finished.images(save_id)
    (blend_file,) = finished.images("91")
    fixed = np.asarray(Image.open(fixed_file)).astype(int)
    blend = np.asarray(Image.open(blend_file))[..., 0] > 0
    assert fixed.shape == original.shape
    assert blend.any(), "Auto Fix blended no region: the sampler never ran"
    changed = np.abs(fixed - original).max(-1)
    assert changed[blend].mean() > 2, "the sampled region is (almost) the original"
    assert changed[~blend].max() <= 1  # SaveImage truncates: one level at most outside the fixed regions
