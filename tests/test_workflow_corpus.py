"""Workflows saved with any earlier release run unchanged (docs/compatibility.md).

The corpus (tests/workflow_corpus.py) holds every example as each past release shipped it, UI file and
API twin, byte for byte. Here, without ComfyUI: the files are still those bytes; each UI file means what
its API twin says, read against today's nodes (values in place, inputs added since at their defaults);
every member that needs no checkpoint runs on the built-in engine of `pal run`, its UI file and its twin
giving the same pixels; the generating ones are refused only for ComfyUI's generation nodes.
tests/test_workflow_corpus_comfyui.py runs the same files on ComfyUI's engine of `pal run` and in a real
ComfyUI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pal_core.cli import main
from pal_core.workflow import WorkflowValidationError, installed_registry, prepare_workflow, run_workflow
from pal_core.workflow import formats
from pal_core.workflow.context import RunContext
from pal_nodes import NODE_CLASS_MAPPINGS
from workflow_corpus import (EXAMPLE_INPUTS, corpus_files, corpus_members, git_blob_id, manifest,
                             with_added_defaults)

MEMBERS = corpus_members()
RUNNABLE = [m for m in MEMBERS if not m.needs_checkpoint]
GENERATING = [m for m in MEMBERS if m.needs_checkpoint]
GENERATION_CLASSES = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode"}


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_the_corpus_is_what_the_releases_shipped_byte_for_byte():
    files = corpus_files()
    releases = manifest()["releases"]
    assert len(releases) >= 5 and releases[0]["date"] < releases[-1]["date"]
    assert len(files) == 2 * len(MEMBERS) and len(MEMBERS) >= 25
    for path, blob in files:
        assert git_blob_id(path.read_bytes()) == blob, f"{path} was edited; the corpus is never edited"
    for member in MEMBERS:
        assert member.ui.is_file() and member.api.is_file(), member.id


def test_the_oldest_release_predates_download_if_missing():
    """The break this corpus was started for: the first files never set the loader's later inputs."""
    oldest = [m for m in MEMBERS if m.release == MEMBERS[0].release]
    loaders = [n for m in oldest for n in m.api_prompt.values() if n["class_type"] == "PALLoadDetector"]
    assert loaders and not any("download_if_missing" in n["inputs"] for n in loaders)
    deprecated = {"PALAutoFix", "PALZoomInpaint", "PALLoadInpainter"}
    assert deprecated <= set().union(*(m.classes for m in oldest))


@pytest.mark.parametrize("member", MEMBERS, ids=lambda m: m.id)
def test_the_ui_file_means_its_api_twin(member):
    """Widget values are read by position: an input inserted among older widgets would move them (caught here
    for every file of every release, as tests/test_node_input_schema.py catches it for every node)."""
    registry = installed_registry()
    loaded = formats.load(json.loads(member.ui.read_text(encoding="utf-8")), registry)
    twin = with_added_defaults(member, member.api_prompt, NODE_CLASS_MAPPINGS)
    assert set(loaded.prompt) == set(twin)
    for node_id, node in loaded.prompt.items():
        if node["class_type"] not in registry:  # ComfyUI's generation nodes: the host test reads those
            continue
        assert node["class_type"] == twin[node_id]["class_type"]
        assert node["inputs"] == twin[node_id]["inputs"], (node_id, node["class_type"])
    assert not [w for w in loaded.warnings if "extra values" in w]


@pytest.mark.parametrize("member", RUNNABLE, ids=lambda m: m.id)
def test_the_member_runs_on_the_builtin_engine_as_saved(member, tmp_path, monkeypatch, capsys):
    """`pal run FILE` on the UI file, as a user would; its API twin gives the same files, pixel for pixel."""
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    status = main(["run", str(member.ui), "--engine", "builtin", "--input-dir", str(EXAMPLE_INPUTS),
                   "--output-dir", str(tmp_path / "ui"), "--json", "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report
    assert report["format"] == "ui"
    twin = run_workflow(member.api, input_dir=EXAMPLE_INPUTS, output_dir=tmp_path / "api", engine="builtin",
                        progress=lambda line: None)
    ui_files = sorted(Path(p) for p in report["files"])
    saves = sum(node["class_type"] == "SaveImage" for node in member.api_prompt.values())
    assert len(ui_files) == len(twin.files) == saves
    for a, b in zip(ui_files, sorted(twin.files)):
        assert a.relative_to(tmp_path / "ui") == b.relative_to(tmp_path / "api")
        assert np.array_equal(pixels(a), pixels(b))


@pytest.mark.parametrize("member", GENERATING, ids=lambda m: m.id)
def test_generating_members_are_refused_only_for_comfyuis_generation_nodes(member, tmp_path):
    """Without ComfyUI the built-in engine has no sampler; every PAL node of the file still validates."""
    context = RunContext(input_dir=EXAMPLE_INPUTS, output_dir=tmp_path)
    for path in (member.api, member.ui):
        with pytest.raises(WorkflowValidationError) as error:
            prepare_workflow(path, context, registry=installed_registry())
        issues = error.value.issues
        assert {issue.kind for issue in issues} == {"missing_node_type"}, [str(i) for i in issues]
        assert set(error.value.missing_node_types()) == member.classes & GENERATION_CLASSES
