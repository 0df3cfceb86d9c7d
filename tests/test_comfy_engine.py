"""`pal run` on ComfyUI's own engine, in-process, against the real ComfyUI 0.3.64 (tests/comfy_host.py
builds it): the checkpoint example end to end with a random tiny SD1.5 checkpoint, a graph mixing
ComfyUI's core nodes with ours, ComfyUI's validation errors as exit 2, a failing node as exit 1, and
every PAL-only example giving pixel-identical files on both engines. No socket may be bound.

All runs share one process (tests/pal_run_many.py), so ComfyUI's start-up is paid once. That process
is this venv's Python (the project installed, its entry points declared) with the ComfyUI venv's extra
packages on its path: what a user has after `pip install -e` of the pack into ComfyUI's Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_host import HOST_ENV, comfy_install  # noqa: F401 (a fixture)
from pal_core import load_detector
from pal_core.train.artifacts import ARTIFACT_KINDS, apply_artifact, random_region
from pal_core.workflow import installed_registry
from tiny_sd15 import write_tiny_sd15

pytestmark = pytest.mark.comfyui

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
DRIVER = Path(__file__).resolve().parent / "pal_run_many.py"
CHECKPOINT = "tiny_sd15.safetensors"
DETECT = "Detect artifacts in your images"
GENERATE_FIX = "Generate then auto-fix artifacts"
GENERATE_RANK = "Generate seeds and keep the best by PAR"


def node(kind, **inputs):
    return {"class_type": kind, "inputs": inputs}


def mixed_graph(prefix: str) -> dict:
    """ComfyUI core nodes generate an image; PAL nodes check it; both are saved."""
    return {
        "1": node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT),
        "2": node("CLIPTextEncode", text="a photo of a dog", clip=["1", 1]),
        "3": node("CLIPTextEncode", text="blurry", clip=["1", 1]),
        "4": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "5": node("KSampler", model=["1", 0], seed=7, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
                  positive=["2", 0], negative=["3", 0], latent_image=["4", 0], denoise=1.0),
        "6": node("VAEDecode", samples=["5", 0], vae=["1", 2]),
        "7": shipped_detector_loader(),
        "8": node("PALDetectArtifacts", detector=["7", 0], images=["6", 0], threshold=0.5),
        "9": node("SaveImage", images=["6", 0], filename_prefix=f"{prefix}/decoded"),
        "10": node("SaveImage", images=["8", 2], filename_prefix=f"{prefix}/overlay"),
    }


def shipped_detector_loader() -> dict:
    """The detector loader as the examples set it (the shipped default model)."""
    example = api_twin(DETECT)
    return example[node_id_of(example, "PALLoadDetector")]


def api_twin(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def node_id_of(graph: dict, class_type: str) -> str:
    return next(node_id for node_id, entry in graph.items() if entry["class_type"] == class_type)


def examples_builtin_can_run() -> list[str]:
    builtin = set(installed_registry())
    return [path.stem for path in sorted(WORKFLOWS.glob("*.json"))
            if {entry["class_type"] for entry in api_twin(path.stem).values()} <= builtin]


def image_with_an_artifact(size: int = 256) -> np.ndarray:
    """An example picture with a synthetic artifact the shipped detector finds (checked below)."""
    with Image.open(WORKFLOWS / "input" / "dog_sdxl_turbo.jpg") as img:
        picture = np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC)).copy()
    rng = np.random.default_rng(3)
    kind = next(k for k in ARTIFACT_KINDS if k.name == "checkerboard_grid")
    region = random_region(picture.shape[:2], 0.04, rng, center=(size * 0.5, size * 0.45))
    edited, _ = apply_artifact(picture, region, kind, rng)
    return edited


@pytest.fixture(scope="module")
def runs(comfy_install, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """Builds the inputs, runs every job in one process, returns (results by job name, folders)."""
    work = tmp_path_factory.mktemp("comfy-engine")
    models, inputs, out = work / "models", work / "input", work / "out"
    write_tiny_sd15(models / "checkpoints" / CHECKPOINT)
    inputs.mkdir()
    artifact_image = image_with_an_artifact()
    Image.fromarray(artifact_image).save(inputs / "artifact.png")
    (inputs / "broken.png").write_bytes(b"this is not an image")
    (work / "mixed.json").write_text(json.dumps(mixed_graph("mixed")))
    (work / "missing.json").write_text(json.dumps({**mixed_graph("missing"), "11": node("NoSuchNode", x=1)}))
    # The generate-and-fix example's fixing half on an image with an artifact: its sampler gets a region.
    fix = api_twin(GENERATE_FIX)
    loader, inpainter, fixer = (node_id_of(fix, kind) for kind in ("CheckpointLoaderSimple", "PALComfyInpainter",
                                                                 "PALAutoFixV2"))
    for kind in ("EmptyLatentImage", "KSampler", "VAEDecode", "PreviewImage"):
        del fix[node_id_of(fix, kind)]
    fix["100"] = node("LoadImage", image="artifact.png")
    fix[fixer]["inputs"].update(images=["100", 0], target_size=64, redetect=False)
    fix[inpainter]["inputs"]["steps"] = 2
    fix[loader]["inputs"]["ckpt_name"] = CHECKPOINT
    (work / "checkpoint_fix.json").write_text(json.dumps(fix))
    comfy = ["--comfyui", str(comfy_install.source), "--json"]
    folders = ["--models-dir", str(models), "--input-dir", str(inputs)]

    def generation(name: str, *sets: str) -> list[str]:
        """The example as shipped (plain `pal run FILE`), at 64x64 with 2 steps and the tiny checkpoint."""
        graph = api_twin(name)
        ids = {kind: node_id_of(graph, kind) for kind in ("CheckpointLoaderSimple", "EmptyLatentImage", "KSampler")}
        values = [f"{ids['CheckpointLoaderSimple']}.ckpt_name={CHECKPOINT}", f"{ids['EmptyLatentImage']}.width=64",
                  f"{ids['EmptyLatentImage']}.height=64", f"{ids['KSampler']}.steps=2",
                  *(f"{node_id_of(graph, kind)}.{value}" for kind, value in (item.split(":") for item in sets))]
        return ["run", str(WORKFLOWS / f"{name}.json"), *comfy, "--models-dir", str(models),
                "--output-dir", str(out / name), *[arg for value in values for arg in ("--set", value)]]

    jobs = {
        "checkpoint": ["run", str(work / "checkpoint_fix.json"), *comfy, *folders,
                       "--output-dir", str(out / "checkpoint")],
        "generate_fix": generation(GENERATE_FIX, "PALComfyInpainter:steps=2", "PALAutoFixV2:target_size=64"),
        "generate_rank": generation(GENERATE_RANK, "EmptyLatentImage:batch_size=2", "PALRankByPAR:top_k=1"),
        "mixed": ["run", str(work / "mixed.json"), *comfy, *folders, "--output-dir", str(out / "mixed")],
        "invalid": ["run", str(work / "mixed.json"), *comfy, *folders, "--output-dir", str(out / "invalid"),
                    "--set", "5.steps=0", "--set", "5.sampler_name=no_such_sampler"],
        "missing": ["run", str(work / "missing.json"), *comfy, *folders, "--output-dir", str(out / "missing")],
        "node_fails": ["run", str(WORKFLOWS / f"{DETECT}.json"), *comfy, "--input-dir", str(inputs),
                       "--output-dir", str(out / "node_fails"),
                       "--set", f"{node_id_of(api_twin(DETECT), 'LoadImage')}.image=broken.png"],
    }
    jobs["python"] = {"run_workflow": {"workflow": str(work / "mixed.json"), "engine": "comfyui",
                                       "comfyui": str(comfy_install.source), "models_dir": str(models),
                                       "output_dir": str(out / "python"), "overrides": {"5.seed": 8}},
                      "outputs": [["6", 0], ["8", 0], ["8", 3], ["1", 0]]}
    # a shipped API twin as shipped: its images are in input/ beside its UI file, one folder up
    jobs["api_twin"] = ["run", str(WORKFLOWS / "api" / f"{DETECT}.json"), *comfy, "--output-dir", str(out / "twin")]
    for name in examples_builtin_can_run():  # plain `pal run FILE`: images from input/ beside the file
        jobs[f"comfyui:{name}"] = ["run", str(WORKFLOWS / f"{name}.json"), *comfy,
                                   "--output-dir", str(out / "c" / name)]
        jobs[f"builtin:{name}"] = ["run", str(WORKFLOWS / f"{name}.json"), "--engine", "builtin", "--json",
                                   "--output-dir", str(out / "b" / name)]
    (work / "jobs.json").write_text(json.dumps(list(jobs.values())))
    env = {**os.environ, **HOST_ENV, "PYTHONPATH": os.pathsep.join(
        [str(comfy_site_packages(comfy_install))] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    env.pop("COMFYUI_PATH", None)
    done = subprocess.run([sys.executable, str(DRIVER), str(work / "jobs.json"), str(work / "results.json")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-5000:]
    report = json.loads((work / "results.json").read_text())
    results = dict(zip(jobs, report["jobs"]))
    return {"results": results, "sockets": report["socket_calls"], "out": out, "inputs": inputs,
            "artifact_image": artifact_image}


def comfy_site_packages(install) -> Path:
    found = sorted((install.folder / "venv" / "lib").glob("python*/site-packages"))
    assert found, f"no site-packages in {install.folder / 'venv'}"
    return found[0]


def summary(result: dict) -> dict:
    assert result["status"] in (0, 1, 2), result["stderr"][-5000:]
    return json.loads(result["stdout"])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_no_server_port_is_opened(runs):
    """Nothing listened or bound a port (the driver refuses both); binds to port 0 are import-time probes."""
    assert [call for call in runs["sockets"] if not call["allowed"]] == []
    assert all(call["call"] == "bind" for call in runs["sockets"])


def test_the_checkpoint_example_runs_headless_with_a_tiny_checkpoint(runs):
    result = runs["results"]["checkpoint"]
    assert result["status"] == 0, result["stderr"][-5000:]
    report = summary(result)
    assert report["engine"] == "comfyui"
    ran = {entry["class_type"] for entry in report["nodes"]}
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "PALComfyInpainter", "PALAutoFixV2", "SaveImage"} <= ran
    (written,) = [Path(p) for p in report["files"]]
    assert written.parent == runs["out"] / "checkpoint" / "pal"
    fixed, original = pixels(written).astype(int), runs["artifact_image"].astype(int)
    assert fixed.shape == original.shape
    changed = np.abs(fixed - original).max(axis=2) > 0
    # The sampler repainted at least one region (a random model paints noise), and nothing else moved.
    assert 0.002 < changed.mean() < 0.5
    assert "100%" in result["stderr"]  # ComfyUI's sampler progress bar ran to its end


@pytest.mark.parametrize("job, saved", [("generate_fix", 1), ("generate_rank", 1)])
def test_the_generation_examples_run_headless_as_shipped(runs, job, saved):
    result = runs["results"][job]
    assert result["status"] == 0, result["stderr"][-5000:]
    report = summary(result)
    assert report["engine"] == "comfyui" and report["format"] == "ui"
    assert "KSampler" in {entry["class_type"] for entry in report["nodes"]}
    files = [Path(p) for p in report["files"]]
    assert len(files) == saved and all(pixels(p).shape == (64, 64, 3) for p in files)


def test_the_detector_finds_the_artifact_put_into_the_input(runs):
    """The checkpoint run only samples where the shipped detector finds something."""
    image = runs["artifact_image"]
    import torch
    found = load_detector(device="cpu").mask(torch.from_numpy(image).float().div(255).unsqueeze(0))[0]
    assert found.float().mean() > 0.002


def test_a_graph_mixing_core_and_pal_nodes_runs(runs):
    result = runs["results"]["mixed"]
    assert result["status"] == 0, result["stderr"][-5000:]
    report = summary(result)
    assert [entry["class_type"] for entry in report["nodes"]].count("KSampler") == 1
    files = sorted(Path(p) for p in report["files"])
    assert [p.name for p in files] == ["decoded_00001_.png", "overlay_00001_.png"]
    decoded, overlay = (pixels(p) for p in files)
    assert decoded.shape == overlay.shape == (64, 64, 3)
    assert decoded.std() > 0  # the VAE decoded something, not a constant
    untinted = (decoded == overlay).all(axis=2)
    assert untinted.any()  # the overlay is the decoded image, tinted only where artifacts were found
    assert "[1/10]" in result["stderr"] and "KSampler" in result["stderr"]  # progress per node


def test_run_workflow_on_comfyui_returns_every_node_output(runs):
    result = runs["results"]["python"]
    assert isinstance(result["status"], dict), result["stderr"][-5000:]
    report = result["status"]
    assert report["engine"] == "comfyui" and len(report["files"]) == 2
    outputs = report["outputs"]
    (decoded,) = outputs["6:0"]
    assert decoded["shape"] == [1, 64, 64, 3] and 0 <= decoded["min"] <= decoded["max"] <= 1
    assert outputs["8:0"][0]["shape"] == [1, 64, 64]  # the artifact mask
    (par,) = outputs["8:3"][0] if isinstance(outputs["8:3"][0], list) else outputs["8:3"]
    assert 0.0 <= par <= 1.0
    assert outputs["1:0"] == ["ModelPatcher"]  # ComfyUI's own objects come back as they are


def test_comfyui_validation_errors_are_exit_2_with_node_class_and_input(runs):
    result = runs["results"]["invalid"]
    assert result["status"] == 2
    report = summary(result)
    assert report["status"] == "invalid"
    by_input = {issue["input_name"]: issue for issue in report["issues"]}
    assert by_input["steps"]["node_id"] == "5" and by_input["steps"]["class_type"] == "KSampler"
    assert by_input["steps"]["type"] == "value_smaller_than_min" and "0" in by_input["steps"]["message"]
    assert by_input["sampler_name"]["type"] == "value_not_in_list"
    assert "node 5 (KSampler) input 'steps'" in result["stderr"]
    assert not (runs["out"] / "invalid").exists() or not any((runs["out"] / "invalid").rglob("*.png"))


def test_a_class_comfyui_lacks_is_named(runs):
    result = runs["results"]["missing"]
    assert result["status"] == 2
    report = summary(result)
    assert [(i["node_id"], i["class_type"], i["type"]) for i in report["issues"]] == [
        ("11", "NoSuchNode", "missing_node_type")]
    assert "custom_nodes" in report["error"]


def test_a_failing_node_is_exit_1_with_its_id_and_class(runs):
    result = runs["results"]["node_fails"]
    assert result["status"] == 1
    report = summary(result)
    assert report["status"] == "failed" and report["class_type"] == "LoadImage"
    assert report["node_id"] == node_id_of(api_twin(DETECT), "LoadImage")
    assert "broken.png" in result["stderr"] or "cannot identify image" in result["stderr"]


@pytest.mark.parametrize("name", examples_builtin_can_run())
def test_both_engines_write_pixel_identical_files(runs, name):
    comfy, builtin = runs["results"][f"comfyui:{name}"], runs["results"][f"builtin:{name}"]
    assert comfy["status"] == 0, comfy["stderr"][-5000:]
    assert builtin["status"] == 0, builtin["stderr"][-5000:]
    assert summary(comfy)["engine"] == "comfyui" and summary(builtin)["engine"] == "builtin"
    comfy_files = sorted(Path(p) for p in summary(comfy)["files"])
    builtin_files = sorted(Path(p) for p in summary(builtin)["files"])
    assert comfy_files and len(comfy_files) == len(builtin_files)
    for a, b in zip(comfy_files, builtin_files):
        assert a.relative_to(runs["out"] / "c" / name) == b.relative_to(runs["out"] / "b" / name)
        assert np.array_equal(pixels(a), pixels(b))


def test_a_shipped_api_twin_runs_as_shipped(runs):
    """`pal run workflows/api/X.json`: no --input-dir, and the same files as its UI file on the built-in engine."""
    twin, builtin = runs["results"]["api_twin"], runs["results"][f"builtin:{DETECT}"]
    assert twin["status"] == 0, twin["stderr"][-5000:]
    assert summary(twin)["engine"] == "comfyui" and summary(twin)["format"] == "api"
    twin_files = sorted(Path(p) for p in summary(twin)["files"])
    builtin_files = sorted(Path(p) for p in summary(builtin)["files"])
    assert twin_files and [p.relative_to(runs["out"] / "twin") for p in twin_files] == [
        p.relative_to(runs["out"] / "b" / DETECT) for p in builtin_files]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(twin_files, builtin_files))
