"""Shared test fixtures: small models and images made on the spot (nothing is downloaded)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

# Installed models are looked up in $PAL_HOME (and $PAL_MODELS_DIR/pal4vst through the node pack): the
# tests start from an empty home of their own, whatever this machine has installed, and never use a mirror.
os.environ["PAL_HOME"] = tempfile.mkdtemp(prefix="pal-test-home-")
for _name in ("PAL_CATALOGUE", "PAL_MODELS_DIR"):
    os.environ.pop(_name, None)

from pal_core import DetectorCheckpoint, save_detector_file
from pal_core.models.swin_upernet import SwinUPerNet, SwinUPerNetConfig

# The test models are tiny: one thread avoids waiting on a second worker thread for every small op,
# which on a shared 2-core machine made the suite several times slower.
torch.set_num_threads(1)

TINY_SWIN = SwinUPerNetConfig(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
                              head_channels=16)


def make_tiny_model(seed: int = 0) -> SwinUPerNet:
    """A tiny Swin + UPerNet with random weights, including BatchNorm statistics."""
    torch.manual_seed(seed)
    model = SwinUPerNet(TINY_SWIN)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_detector_file(tmp_path_factory) -> str:
    """Path to a tiny random detector in our .safetensors format."""
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_detector_file(DetectorCheckpoint(make_tiny_model(), "tiny", source="random test model"), path)
    return str(path)


# The real ComfyUI (tests/comfy_host.py): session fixtures for tests marked `comfyui`.
from comfy_host import (comfy_install, comfy_server, comfy_server_newest_front_end,  # noqa: E402,F401
                        newest_front_end)
