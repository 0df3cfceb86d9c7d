"""Workflows saved with any earlier release, in ComfyUI: on the ComfyUI engine of `pal run` (in-process,
tests/pal_run_many.py) and in a real ComfyUI 0.3.64 server (tests/comfy_host.py). The files are the
corpus's (tests/workflow_corpus.py), unchanged; the generating ones get the random tiny SD1.5, 64x64
latents and 2 steps through --set (their checkpoint is not here, and a CPU must run them), nothing else.

Every UI file runs on ComfyUI's engine; those that need no checkpoint write, pixel for pixel, what their
API twins write on the built-in engine. The real server runs each API twin (to the same files, one level
of rounding at most) and reads each UI file, with its own node definitions, as the front end does: into
the API twin, inputs added since at their defaults. tests/test_browser.py loads them in the real front end.
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

from comfy_host import HOST_ENV, comfy_install, comfy_server  # noqa: F401 (fixtures)
from pal_nodes import NODE_CLASS_MAPPINGS
from test_comfyui_host import NOTES, widget_slots
from tiny_sd15 import write_tiny_sd15
from workflow_corpus import EXAMPLE_INPUTS, CorpusMember, corpus_members, with_added_defaults

pytestmark = pytest.mark.comfyui

DRIVER = Path(__file__).resolve().parent / "pal_run_many.py"
CHECKPOINT = "tiny_sd15_corpus.safetensors"
MEMBERS = corpus_members()
RUNNABLE = [m for m in MEMBERS if not m.needs_checkpoint]
GENERATING = [m for m in MEMBERS if m.needs_checkpoint]
# What a CPU can run in seconds, by class and input; only the inputs a member has are set.
SMALL = {"CheckpointLoaderSimple": {"ckpt_name": CHECKPOINT}, "EmptyLatentImage": {"width": 64, "height": 64,
                                                                                    "batch_size": 2},
         "KSampler": {"steps": 2}, "PALComfyInpainter": {"steps": 2}, "PALAutoFix": {"target_size": 64},
         "PALAutoFixV2": {"target_size": 64}}


def small_settings(member: CorpusMember) -> dict[str, dict]:
    """{node_id: {input: value}}: the tiny checkpoint and CPU-sized settings for a generating member."""
    return {node_id: {name: value for name, value in SMALL.get(node["class_type"], {}).items()
                      if name in node["inputs"]}
            for node_id, node in member.api_prompt.items() if node["class_type"] in SMALL}


def set_arguments(member: CorpusMember) -> list[str]:
    return [arg for node_id, values in small_settings(member).items() for name, value in values.items()
            for arg in ("--set", f"{node_id}.{name}={value}")]


def comfy_site_packages(install) -> Path:
    found = sorted((install.folder / "venv" / "lib").glob("python*/site-packages"))
    assert found, f"no site-packages in {install.folder / 'venv'}"
    return found[0]


@pytest.fixture(scope="module")
def headless(comfy_install, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """Every member through `pal run` in one process: the UI file on ComfyUI's engine (the API twins go through
    the same validation and executor in the real server below), and the API twin on the built-in engine.
    Returns (results by job name, output root)."""
    work = tmp_path_factory.mktemp("corpus-engines")
    models, out = work / "models", work / "out"
    write_tiny_sd15(models / "checkpoints" / CHECKPOINT)
    comfy = ["--comfyui", str(comfy_install.source), "--json", "--quiet", "--input-dir", str(EXAMPLE_INPUTS)]
    jobs = {}
    for index, member in enumerate(MEMBERS):
        jobs[f"comfyui:{member.id}"] = ["run", str(member.ui), *comfy, "--models-dir", str(models),
                                        "--output-dir", str(out / "c" / str(index)), *set_arguments(member)]
        if not member.needs_checkpoint:
            jobs[f"builtin:{member.id}"] = ["run", str(member.api), "--engine", "builtin", "--json", "--quiet",
                                            "--input-dir", str(EXAMPLE_INPUTS),
                                            "--output-dir", str(out / "b" / str(index))]
    (work / "jobs.json").write_text(json.dumps(list(jobs.values())))
    env = {**os.environ, **HOST_ENV, "PYTHONPATH": os.pathsep.join(
        [str(comfy_site_packages(comfy_install))] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    env.pop("COMFYUI_PATH", None)
    done = subprocess.run([sys.executable, str(DRIVER), str(work / "jobs.json"), str(work / "results.json")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-5000:]
    report = json.loads((work / "results.json").read_text())
    return dict(zip(jobs, report["jobs"])), out


def written(result: dict) -> list[Path]:
    assert result["status"] == 0, result["stderr"][-5000:]
    return sorted(Path(p) for p in json.loads(result["stdout"])["files"])


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def saves(member: CorpusMember) -> int:
    return sum(node["class_type"] == "SaveImage" for node in member.api_prompt.values())


def every_save_wrote(member: CorpusMember, files: list[Path]) -> bool:
    """Each SaveImage of the member wrote at least one image (a batch writes one per image)."""
    prefixes = [Path(node["inputs"]["filename_prefix"]).name for node in member.api_prompt.values()
                if node["class_type"] == "SaveImage"]
    return bool(prefixes) and all(any(path.name.startswith(prefix + "_") and pixels(path).ndim == 3
                                      for path in files) for prefix in prefixes)


@pytest.mark.parametrize("member", RUNNABLE, ids=lambda m: m.id)
def test_the_member_runs_alike_on_both_engines_of_pal_run(member, headless):
    """The UI file on ComfyUI's engine writes what its API twin writes on the built-in one, pixel for pixel."""
    results, out = headless
    index = str(MEMBERS.index(member))
    comfy, builtin = written(results[f"comfyui:{member.id}"]), written(results[f"builtin:{member.id}"])
    report = json.loads(results[f"comfyui:{member.id}"]["stdout"])
    assert report["engine"] == "comfyui" and report["format"] == "ui"
    assert len(builtin) == saves(member)
    assert [p.relative_to(out / "c" / index) for p in comfy] == [p.relative_to(out / "b" / index) for p in builtin]
    for path, expected in zip(comfy, builtin):
        assert np.array_equal(pixels(path), pixels(expected)), path


@pytest.mark.parametrize("member", GENERATING, ids=lambda m: m.id)
def test_the_generating_member_runs_on_comfyuis_engine(member, headless):
    results, _ = headless
    assert every_save_wrote(member, written(results[f"comfyui:{member.id}"]))


def prompt_for_the_server(member: CorpusMember, prefix: str) -> dict:
    """The API twin as saved, its files kept apart from other tests' (the server's output folder is shared)."""
    prompt = json.loads(json.dumps(member.api_prompt))
    for node_id, values in small_settings(member).items():
        prompt[node_id]["inputs"].update(values)
    for node in prompt.values():
        if node["class_type"] == "SaveImage":
            node["inputs"]["filename_prefix"] = f"{prefix}/{node['inputs']['filename_prefix']}"
    return prompt


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.id)
def test_the_api_twin_runs_in_a_real_comfyui(member, comfy_server, headless):  # noqa: F811
    if member.needs_checkpoint:
        checkpoint = comfy_server.base / "models" / "checkpoints" / CHECKPOINT
        if not checkpoint.is_file():
            write_tiny_sd15(checkpoint)
    prefix = "corpus-" + member.id.replace("/", "-").replace(" ", "_")
    prompt = prompt_for_the_server(member, prefix)
    finished = comfy_server.run(prompt, timeout=900)
    files = sorted(path for node_id, node in prompt.items() if node["class_type"] == "SaveImage"
                   for path in finished.images(node_id))
    assert all(path.is_file() for path in files) and every_save_wrote(member, files)
    if member.needs_checkpoint:
        return
    results, out = headless
    index = str(MEMBERS.index(member))
    builtin = written(results[f"builtin:{member.id}"])
    assert [p.relative_to(comfy_server.base / "output" / prefix) for p in files] == [
        p.relative_to(out / "b" / index) for p in builtin]
    for theirs, ours in zip(files, builtin):
        difference = np.abs(pixels(theirs).astype(int) - pixels(ours).astype(int))
        # SaveImage truncates 255 * value: a last-bit float difference (threads, SIMD) moves a pixel one level
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (theirs, difference.max())


def front_end_meaning(ui: dict, info: dict) -> dict:
    """What ComfyUI's front end sends for a UI file: widget values by position against the server's node
    definitions, widgets the file has no value for at their defaults, links as [origin, slot]."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node["type"] in NOTES:
            continue
        definition = info[node["type"]]
        slots, values = widget_slots(definition), list(node.get("widgets_values") or [])
        assert len(values) <= len(slots), (node["id"], node["type"], values, slots)  # more: a widget went
        inputs = {name: value for name, value in zip(slots, values) if name is not None}
        for name in slots[len(values):]:
            if name is not None:
                spec = definition["input"].get("required", {}).get(name) or definition["input"]["optional"][name]
                inputs[name] = spec[1]["default"]
        for entry in node.get("inputs", []):
            if entry.get("link") is not None:
                _, origin, slot, target, _, _ = links[entry["link"]]
                assert target == node["id"]
                inputs[entry["name"]] = [str(origin), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.id)
def test_the_ui_file_means_its_api_twin_to_a_real_comfyui(member, comfy_server):  # noqa: F811
    """Every node of the file, ComfyUI's own included, read with the real server's definitions."""
    info = comfy_server.object_info()
    meaning = front_end_meaning(json.loads(member.ui.read_text(encoding="utf-8")), info)
    twin = with_added_defaults(member, member.api_prompt, NODE_CLASS_MAPPINGS)
    assert meaning == {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]}
                       for node_id, node in twin.items()}
