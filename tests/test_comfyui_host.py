"""The pack in a real ComfyUI (0.3.64), installed as ComfyUI-Manager installs it: the repository cloned
into custom_nodes/pal-nodes and its requirements.txt installed, the project itself not pip-installed.
The harness is tests/comfy_host.py; one server serves the whole session."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_host import PACK_FOLDER, ROOT
from tiny_sd15 import write_tiny_sd15
from pal_core.workflow import run_workflow
from pal_nodes import NODE_CLASS_MAPPINGS

pytestmark = pytest.mark.comfyui

WORKFLOWS = ROOT / "workflows"
EXAMPLES = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
GENERATE_FIX = "Generate then auto-fix artifacts"
TINY_CHECKPOINT = "tiny_sd15_test.safetensors"  # the name tests/test_browser.py uses too: written once
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NOTES = {"Note", "MarkdownNote"}  # frontend-only, linked to nothing: not part of the prompt
RESOLVED_AWAY = {"Reroute", "PrimitiveNode"}  # frontend-only too, but carry links or values (not in the examples)


def api(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def needs_checkpoint(name: str) -> bool:
    return any(node["class_type"] == "CheckpointLoaderSimple" for node in api(name).values())


def tiny_checkpoint(server) -> str:
    path = server.base / "models" / "checkpoints" / TINY_CHECKPOINT
    if not path.is_file():
        write_tiny_sd15(path)
    return path.name


def url(name: str) -> str:
    return urllib.parse.quote(name)


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
    assert NODE_CLASS_MAPPINGS
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
    listed = comfy_server.get("/api/workflow_templates")
    assert sorted(listed[PACK_FOLDER]) == EXAMPLES
    for name in EXAMPLES:
        status, body = comfy_server.request(f"/api/workflow_templates/{PACK_FOLDER}/{url(name)}.json")
        assert status == 200 and json.loads(body) == json.loads((WORKFLOWS / f"{name}.json").read_text())
        status, body = comfy_server.request(f"/api/workflow_templates/{PACK_FOLDER}/{url(name)}.jpg")
        assert status == 200 and body == (WORKFLOWS / f"{name}.jpg").read_bytes()


@pytest.mark.parametrize("name", [n for n in EXAMPLES if not needs_checkpoint(n)])
def test_example_workflow_runs_in_comfyui_as_it_does_headless(name, comfy_server, tmp_path):
    """Queued through /prompt, each API twin runs to its outputs; the images equal `pal run`'s."""
    prompt = api(name)
    own = "host-" + name.replace(" ", "_")  # other tests of the session save with the same prefixes
    saved = [node for node in prompt.values() if node["class_type"] == "SaveImage"]
    assert saved
    for node in saved:
        node["inputs"]["filename_prefix"] = f"{own}/{node['inputs']['filename_prefix']}"
    finished = comfy_server.run(prompt)
    headless = run_workflow(WORKFLOWS / "api" / f"{name}.json", input_dir=WORKFLOWS / "input", output_dir=tmp_path,
                            engine="builtin", progress=lambda line: None)
    ours = sorted(path.relative_to(tmp_path) for path in headless.files)
    theirs = sorted(path.relative_to(comfy_server.base / "output" / own)
                    for node_id, node in prompt.items() if node["class_type"] == "SaveImage"
                    for path in finished.images(node_id))
    assert theirs == ours and ours
    for relative in ours:
        comfy_pixels = np.asarray(Image.open(comfy_server.base / "output" / own / relative)).astype(int)
        headless_pixels = np.asarray(Image.open(tmp_path / relative)).astype(int)
        difference = np.abs(comfy_pixels - headless_pixels)
        # SaveImage truncates 255 * value: a last-bit float difference in a resize (another thread count or
        # SIMD path) can move a pixel by one level. Anything more is a real difference.
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (relative, difference.max(),
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
        if node["type"] in NOTES:
            continue
        assert node["type"] not in RESOLVED_AWAY and node.get("mode", 0) == 0, "examples use plain, active nodes"
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
        if node.get("title"):  # a title the user gave travels as metadata, as the frontend sends it
            prompt[str(node["id"])]["_meta"] = {"title": node["title"]}
    return prompt


@pytest.mark.parametrize("name", EXAMPLES)
def test_api_twin_is_what_the_ui_graph_means(name, comfy_server):
    info = comfy_server.object_info()
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    assert graph_meaning(ui, info) == api(name)


@pytest.mark.parametrize("name", [n for n in EXAMPLES if needs_checkpoint(n)])
def test_generation_example_runs_in_comfyui_with_a_tiny_checkpoint(name, comfy_server):
    """The examples that generate first, queued through /prompt: a random tiny SD1.5 instead of their
    checkpoint, 64x64 latents and 2 steps, so a CPU runs them; every output node delivers its images."""
    prompt = api(name)
    for node in prompt.values():
        inputs = node["inputs"]
        {"CheckpointLoaderSimple": lambda: inputs.update(ckpt_name=tiny_checkpoint(comfy_server)),
         "EmptyLatentImage": lambda: inputs.update(width=64, height=64),
         "KSampler": lambda: inputs.update(steps=2),
         "PALComfyInpainter": lambda: inputs.update(steps=2)}.get(node["class_type"], lambda: None)()
    finished = comfy_server.run(prompt, timeout=900)
    for node_id, node in prompt.items():
        if node["class_type"] in ("SaveImage", "PreviewImage"):
            files = finished.images(node_id)
            assert files and all(f.is_file() for f in files), (node_id, finished.outputs.get(node_id))


def test_checkpoint_inpainter_samples_the_found_region_with_comfyuis_sampler(comfy_server):
    """Generate then auto-fix, its Auto Fix given an image where the shipped model finds an artifact (the
    examples' synthetic-artifact input, checked here): CheckpointLoaderSimple (the random tiny SD1.5) ->
    CLIP Text Encode -> PAL ComfyUI Model Inpainter (InpaintModelConditioning + KSampler) on the region."""
    from pal_core import load_detector
    from pal_core.imageio import read_image

    flagged = "dog_synthetic_artifacts.jpg"
    original = read_image(WORKFLOWS / "input" / flagged)
    assert int(load_detector(device="cpu").mask(original.unsqueeze(0))[0].sum()) >= 256
    prompt = api(GENERATE_FIX)
    ids = {node["class_type"]: node_id for node_id, node in prompt.items()}
    prompt[ids["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"] = tiny_checkpoint(comfy_server)
    prompt[ids["PALComfyInpainter"]]["inputs"]["steps"] = 2
    fix = prompt[ids["PALAutoFixV2"]]["inputs"]
    prompt["90"] = {"class_type": "LoadImage", "inputs": {"image": flagged}}
    # Small and quick on a CPU; keep every fix (the random model's output would not lower the PAR).
    fix.update(images=["90", 0], target_size=128, redetect=False)
    for unused in ("EmptyLatentImage", "KSampler", "VAEDecode", "PreviewImage"):
        del prompt[ids[unused]]
    prompt["91"] = {"class_type": "MaskToImage", "inputs": {"mask": [ids["PALAutoFixV2"], 2]}}  # the blend mask
    prompt["92"] = {"class_type": "SaveImage", "inputs": {"images": ["91", 0], "filename_prefix": "pal/blend"}}

    finished = comfy_server.run(prompt, timeout=900)
    (fixed_file,) = finished.images(ids["SaveImage"])
    (blend_file,) = finished.images("92")
    fixed = np.asarray(Image.open(fixed_file)).astype(int)
    start = np.asarray(Image.open(WORKFLOWS / "input" / flagged).convert("RGB")).astype(int)
    blend = np.asarray(Image.open(blend_file))[..., 0] > 0
    assert fixed.shape == start.shape
    assert blend.any(), "Auto Fix blended no region: the sampler never ran"
    changed = np.abs(fixed - start).max(-1)
    assert changed[blend].mean() > 2, "the sampled region is (almost) the original"
    assert changed[~blend].max() <= 1  # SaveImage truncates: one level at most outside the fixed regions
