"""The converted network reproduces mmsegmentation's outputs on fixtures mmsegmentation made.

tests/fixtures/mmseg/<config>.pth is a randomly initialised mmseg Swin + UPerHead (+ FCN auxiliary
head) checkpoint in the official layout; <config>.cases.safetensors holds input images and what
mmseg computed for them (tools/make_mmseg_fixture.py made both, with mmsegmentation 1.2.2).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from pal_core import load_detector
from pal_core.detect.preprocess import Preprocess
from pal_core.models import swin_upernet
from pal_core.models.swin_upernet import checkpoint_filter_fn, config_from_mmseg, from_mmseg_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg"
CONFIGS = ["swin_w12", "swin_w7"]
TOLERANCE = 1e-4


@functools.lru_cache(maxsize=None)
def load_fixture(name: str):
    checkpoint = torch.load(FIXTURES / f"{name}.pth", map_location="cpu", weights_only=True)
    with safe_open(str(FIXTURES / f"{name}.cases.safetensors"), "pt") as f:
        cases = json.loads(f.metadata()["cases"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return checkpoint, cases, tensors


def network_input(image_uint8: torch.Tensor) -> torch.Tensor:
    return Preprocess(input_size=None)(image_uint8.float().unsqueeze(0) / 255.0)


def all_cases():
    for name in CONFIGS:
        _, cases, _ = load_fixture(name)
        for case in cases:
            yield name, case


@pytest.mark.parametrize("name,case", list(all_cases()))
def test_stages_and_logits_match_mmseg(name, case):
    checkpoint, _, tensors = load_fixture(name)
    model = from_mmseg_checkpoint(checkpoint["state_dict"], checkpoint["meta"]).eval()
    image = tensors[f"{case}.image"]
    with torch.no_grad():
        features = model.backbone(network_input(image))
        decode = model.decode_head(features)
    compared = 0
    for i, feature in enumerate(features):
        if f"{case}.stage{i}" in tensors:
            assert (feature - tensors[f"{case}.stage{i}"]).abs().max() <= TOLERANCE, f"stage {i}"
            compared += 1
    assert compared >= 2
    assert decode.shape == tensors[f"{case}.decode"].shape
    assert (decode - tensors[f"{case}.decode"]).abs().max() <= TOLERANCE
    if f"{case}.logits" in tensors:
        logits = F.interpolate(decode, size=image.shape[:2], mode="bilinear", align_corners=False)
        assert (logits - tensors[f"{case}.logits"]).abs().max() <= TOLERANCE


@pytest.mark.parametrize("name", CONFIGS)
def test_detector_at_native_size_gives_mmseg_probabilities(name):
    """Through the public API: load the .pth, run at the image's own size, compare softmax(class 1)."""
    _, cases, tensors = load_fixture(name)
    detector = load_detector(FIXTURES / f"{name}.pth", device="cpu", dtype="fp32", input_size=None)
    assert detector.info.format == "mmseg"
    for case in cases:
        if f"{case}.logits" not in tensors:
            continue
        image = tensors[f"{case}.image"].float() / 255.0
        expected = torch.softmax(tensors[f"{case}.logits"], dim=1)[0, 1]
        prob = detector.predict(image.unsqueeze(0))[0]
        assert prob.shape == image.shape[:2]
        assert (prob - expected).abs().max() <= TOLERANCE
        mmseg_mask = tensors[f"{case}.logits"].argmax(dim=1)[0].bool()
        assert torch.equal(detector.mask(image.unsqueeze(0))[0], mmseg_mask)


def test_hyper_parameters_come_from_shapes_and_meta():
    w12 = config_from_mmseg(load_fixture("swin_w12")[0]["state_dict"])
    assert (w12.embed_dim, w12.depths, w12.num_heads, w12.window_size) == (16, (2, 2, 2, 2), (1, 2, 4, 8), 12)
    assert (w12.head_channels, w12.pool_scales, w12.num_classes) == (32, (1, 2, 3, 6), 2)
    checkpoint = load_fixture("swin_w7")[0]
    w7 = config_from_mmseg(checkpoint["state_dict"], checkpoint["meta"])
    assert (w7.embed_dim, w7.depths, w7.num_heads, w7.window_size) == (8, (1, 1, 3, 1), (1, 2, 4, 8), 7)
    assert (w7.head_channels, w7.pool_scales) == (24, (1, 2, 4))  # three scales: read from meta['cfg']
    with pytest.raises(swin_upernet.CheckpointMismatch, match="pyramid pooling"):
        config_from_mmseg(checkpoint["state_dict"], meta=None)


def _decode_wide(model, crop: bool = False) -> torch.Tensor:
    _, _, tensors = load_fixture("swin_w12")
    image = tensors["wide.image"][:48, :64] if crop else tensors["wide.image"]
    with torch.no_grad():
        return model(network_input(image))


def test_every_converted_tensor_changes_the_output():
    """A wrong key mapping would go unnoticed if some tensor did not matter; each one does."""
    checkpoint, _, tensors = load_fixture("swin_w12")
    model = from_mmseg_checkpoint(checkpoint["state_dict"]).eval()
    assert (_decode_wide(model) - tensors["wide.decode"]).abs().max() <= TOLERANCE
    reference = _decode_wide(model, crop=True)  # a small crop: ~150 forward passes follow
    state = model.state_dict()
    insensitive = []
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        original = value.clone()
        with torch.no_grad():
            value.copy_(original.flip(0) * 1.5 + 0.1 if value.dim() else original + 1)
        if (_decode_wide(model, crop=True) - reference).abs().max() <= TOLERANCE:
            insensitive.append(key)
        with torch.no_grad():
            value.copy_(original)
    assert insensitive == []


def test_patch_merging_without_channel_permutation_does_not_match(monkeypatch):
    """The unfold-order permutation of the merging weights is needed: identity order fails the fixture."""
    checkpoint, _, tensors = load_fixture("swin_w12")
    monkeypatch.setattr(swin_upernet, "_unfold_to_timm_order", lambda weight, dim_in: weight)
    model = from_mmseg_checkpoint(checkpoint["state_dict"]).eval()
    assert (_decode_wide(model) - tensors["wide.decode"]).abs().max() > 1e-2


def test_wrong_shapes_and_keys_are_named():
    state = dict(load_fixture("swin_w12")[0]["state_dict"])  # a copy: the cached fixture stays intact
    model = swin_upernet.SwinUPerNet(config_from_mmseg(state))
    broken = dict(state)
    broken["decode_head.fpn_bottleneck.conv.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(swin_upernet.CheckpointMismatch, match="fpn_bottleneck.conv.weight"):
        checkpoint_filter_fn(broken, model)
    missing = {k: v for k, v in state.items() if not k.startswith("backbone.norm2.")}
    with pytest.raises(swin_upernet.CheckpointMismatch, match="missing key 'backbone.out_norms.2.weight'"):
        checkpoint_filter_fn(missing, model)
    extra = dict(state, **{"decode_head.something_new.weight": torch.zeros(1)})
    with pytest.raises(swin_upernet.CheckpointMismatch, match="unexpected key 'decode_head.something_new.weight'"):
        checkpoint_filter_fn(extra, model)
    converted = checkpoint_filter_fn(state, model)
    assert not any(k.startswith("auxiliary_head") for k in converted)  # dropped at load
