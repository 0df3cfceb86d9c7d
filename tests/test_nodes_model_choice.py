"""Load Artifact Detector's model list: the catalogue (installed first, missing marked), the files in
models/pal4vst, loading by name, and downloading only when its switch is on (from 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_host import ModelHost, Served
from pal_core.hub import catalogue, loading, model_store
from pal_core.hub.installing import install_file
from pal_core.hub.loading import ModelNotFoundError
from pal_nodes import comfy_env
from pal_nodes.detection import PALLoadDetector

FIXTURE = Path(__file__).parent / "fixtures" / "mmseg" / "swin_w12.pth"
TINY_W12 = {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 12,
            "head_channels": 32}


@pytest.fixture
def models_dir(tmp_path, monkeypatch, tiny_detector_file):
    """ComfyUI's models folder as the node pack sees it outside ComfyUI, with one file of the user's."""
    folder = tmp_path / "models" / "pal4vst"
    folder.mkdir(parents=True)
    (folder / "mine.safetensors").write_bytes(Path(tiny_detector_file).read_bytes())
    (folder / "notes.txt").write_text("not a model")
    monkeypatch.setenv(comfy_env.MODELS_ENV, str(tmp_path / "models"))
    monkeypatch.setenv(model_store.HOME_ENV, str(tmp_path / "home"))
    return folder


@pytest.fixture
def host(tmp_path, monkeypatch):
    server = ModelHost()
    server.files["/s.pth"] = Served(FIXTURE.read_bytes())
    overrides = {name: {"architecture": TINY_W12} for name in ("pal4vst-unified", "pal4vst-stylegan2")}
    overrides["pal4vst-stylegan2"]["url"] = server.url("/s.pth")
    (tmp_path / "catalogue.json").write_text(json.dumps(overrides))
    monkeypatch.setenv(catalogue.CATALOGUE_ENV, str(tmp_path / "catalogue.json"))
    yield server
    server.close()


def choices() -> list[str]:
    return PALLoadDetector.INPUT_TYPES()["required"]["model"][0]


def test_lists_installed_first_missing_marked_then_files(models_dir, host):
    assert choices() == ["default", "pal-lite", "pal4vst-unified (not installed)", "pal4vst-stylegan2 (not installed)",
                         "pal4vst-shadow (not installed)", "mine.safetensors"]
    install_file(FIXTURE, "pal4vst-unified")  # into models/pal4vst: the folder the node pack registered
    assert (models_dir / "pal4vst-unified.safetensors.sha256").is_file()
    assert choices() == ["default", "pal4vst-unified", "pal-lite", "pal4vst-stylegan2 (not installed)",
                         "pal4vst-shadow (not installed)", "mine.safetensors"]
    tooltip = PALLoadDetector.INPUT_TYPES()["required"]["model"][1]["tooltip"]
    assert "pal4vst-shadow: the paper's specialist for shadow-removal" in tooltip
    # a workflow saved before the install still validates, and loads the installed model
    assert PALLoadDetector.VALIDATE_INPUTS("pal4vst-unified (not installed)") is True
    assert PALLoadDetector.VALIDATE_INPUTS("gone.safetensors") != True  # noqa: E712 (an error text)
    detector, info = PALLoadDetector().load("pal4vst-unified (not installed)", "cpu", "fp32", 512, False)["result"]
    assert detector.name == "pal4vst-unified" and str(models_dir) in info
    detector, info = PALLoadDetector().load("default", "cpu", "fp32", 512, False)["result"]
    assert detector.name == "pal4vst-unified" and "pal-lite" not in info
    assert PALLoadDetector().load("mine.safetensors", "cpu", "fp32", 512, False)["result"][0].name == "tiny"


def test_missing_model_downloads_only_when_switched_on(models_dir, host, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="pal4vst-stylegan2 is not installed: turn on download_if_missing in this "
                                                 "node.*save the file in .*pal4vst and choose it"):
        PALLoadDetector().load("pal4vst-stylegan2 (not installed)", "cpu", "fp32", 512, False)
    assert host.requests == []
    reported = []

    class RecordingProgress(comfy_env.Progress):
        def __call__(self, done, total):
            reported.append((done, total))
            super().__call__(done, total)

    monkeypatch.setattr(comfy_env, "Progress", RecordingProgress)
    detector, info = PALLoadDetector().load("pal4vst-stylegan2 (not installed)", "cpu", "fp32", 512, True)["result"]
    assert detector.name == "pal4vst-stylegan2" and (models_dir / "pal4vst-stylegan2.safetensors").is_file()
    assert reported[-1] == (FIXTURE.stat().st_size,) * 2 and len(host.requests) == 1


def test_default_says_when_it_falls_back_to_pal_lite(models_dir, monkeypatch):
    monkeypatch.setattr(loading, "_said", set())
    shown = PALLoadDetector().load("default", "cpu", "fp32", 512, False)
    detector, info = shown["result"]
    assert detector.name == "pal_lite" and "pal download pal4vst-unified" in info
    assert shown["ui"]["text"] == [info]  # drawn on the node too


def test_node_reports_name_the_model(models_dir):
    from pal_core.refinement.inpainters import make_inpainter
    from pal_nodes.detection import PALPARScore, PALRankByPAR
    from pal_nodes.refinement import PALAutoFix

    detector = PALLoadDetector().load("mine.safetensors", "cpu", "fp32", 64, False)["result"][0]
    images = torch.rand(2, 32, 32, 3)
    assert json.loads(PALRankByPAR().rank(detector, images, 1, 1.0, 0.5)["result"][4])["model"] == "tiny"
    assert [r["model"] for r in json.loads(PALPARScore().score(0.5, images, detector)["result"][1])] == ["tiny"] * 2
    assert "model" not in json.loads(PALPARScore().score(0.5, mask=torch.zeros(1, 8, 8))["result"][1])[0]
    report = PALAutoFix().fix(images, detector, make_inpainter("opencv"), "", 0, 0.5, 1.5, 64, 0.1, False, True)["result"][3]
    assert [r["model"] for r in json.loads(report)] == ["tiny"] * 2
