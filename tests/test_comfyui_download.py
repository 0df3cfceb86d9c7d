"""The loader node's download path in a real ComfyUI, the pack installed as ComfyUI-Manager does
(requirements.txt only: the downloader comes from there), the file host a stand-in on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfy_host import CATALOGUE_FILE
from model_host import ModelHost, Served

pytestmark = pytest.mark.comfyui

FIXTURE = Path(__file__).parent / "fixtures" / "mmseg" / "swin_w12.pth"
TINY_W12 = {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 12,
            "head_channels": 32}
# Not pal4vst-unified: installing that would change the default model of the session's other tests.
NAME = "pal4vst-stylegan2"


def score_prompt(model: str, download: bool, input_size: int = 64) -> dict:
    """Load Detector -> PAR Score on an example picture (another input_size keeps ComfyUI from reusing a result)."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "dog_sdxl_turbo.jpg"}},
        "2": {"class_type": "PALLoadDetector", "inputs": {"model": model, "device": "cpu", "precision": "fp32",
                                                           "input_size": input_size, "download_if_missing": download}},
        "3": {"class_type": "PALPARScore", "inputs": {"threshold": 0.5, "images": ["1", 0], "detector": ["2", 0]}},
    }


@pytest.fixture
def stand_in_host(comfy_server):
    host = ModelHost()
    catalogue = comfy_server.base / CATALOGUE_FILE
    catalogue.write_text(json.dumps({NAME: {"url": host.url("/stylegan2.pth"), "architecture": TINY_W12}}))
    yield host
    catalogue.write_text("{}")
    for path in (comfy_server.base / "models" / "pal4vst").glob(f"{NAME}.*"):
        path.unlink()
    host.close()


def test_the_node_downloads_a_missing_model_when_switched_on(comfy_server, stand_in_host):
    stand_in_host.files["/stylegan2.pth"] = Served(FIXTURE.read_bytes())
    refused = comfy_server.wait(comfy_server.queue(score_prompt(f"{NAME} (not installed)", download=False)))
    assert not refused.succeeded and stand_in_host.requests == []
    message = refused.error()["exception_message"]
    assert "turn on download_if_missing in this node" in message and "pal download" not in message
    assert f"save the file in {comfy_server.base / 'models' / 'pal4vst'}" in message

    finished = comfy_server.run(score_prompt(f"{NAME} (not installed)", download=True))
    assert finished.succeeded, finished.error()
    assert len(stand_in_host.requests) == 1
    installed = comfy_server.base / "models" / "pal4vst" / f"{NAME}.safetensors"
    assert installed.is_file() and (installed.parent / f"{NAME}.safetensors.sha256").is_file()
    assert f"[PAL] {NAME}: reading" in comfy_server.log() and f"[PAL] {NAME}: writing" in comfy_server.log()
    assert finished.outputs["2"]["text"] == [f"{NAME} (safetensors, fp32 on cpu) from {installed}"]
    assert len(finished.outputs["3"]["par"]) == 1 and 0.0 <= finished.outputs["3"]["par"][0] <= 1.0


def test_a_refused_download_gives_comfyui_advice(comfy_server, stand_in_host):
    stand_in_host.files["/stylegan2.pth"] = Served(b"<!DOCTYPE html><html>Quota exceeded</html>", "text/html")
    finished = comfy_server.wait(comfy_server.queue(score_prompt(f"{NAME} (not installed)", True, input_size=96)))
    assert not finished.succeeded
    message = finished.error()["exception_message"]
    assert "quota" in message and "choose it by its file name in this node's model list" in message
    assert "pal models add" not in message
