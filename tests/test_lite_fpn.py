"""PAL-lite's network: output shape at any size, config round trip, ImageNet weight mapping."""

import pytest
import timm
import torch

from pal_core import DetectorCheckpoint, load_detector, read_detector_file, save_detector_file
from pal_core.models import build_model
from pal_core.models.lite_fpn import LiteFPN, LiteFPNConfig, PretrainedWeightsError, load_imagenet_encoder

TINY = LiteFPNConfig(channels=8)


@pytest.mark.parametrize("size", [(64, 64), (72, 100)])
def test_logits_at_quarter_resolution(size):
    model = LiteFPN(TINY).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 2, -(-size[0] // 4), -(-size[1] // 4))


def test_registered_and_saved_with_its_config(tmp_path):
    model = LiteFPN(TINY).eval()
    rebuilt = build_model("lite_fpn", model.config.to_dict())
    assert rebuilt.config == model.config
    path = save_detector_file(DetectorCheckpoint(model, "tiny-lite"), tmp_path / "m.safetensors")
    assert read_detector_file(path).model.config == TINY
    detector = load_detector(str(path), device="cpu", dtype="fp32")
    x = torch.rand(2, 50, 60, 3)
    expected = torch.softmax(torch.nn.functional.interpolate(
        model(detector._network_input(list(x))), size=(50, 60), mode="bilinear", align_corners=False), 1)[:, 1]
    torch.testing.assert_close(detector.predict(x), expected, rtol=1e-4, atol=1e-5)


def wheel_style_state_dict(seed: int = 0) -> dict:
    """A state dict named as in the EfficientNet-PyTorch wheel (`_blocks.N._depthwise_conv`, ...): timm's
    full lite0 tensors in timm's order under other names, plus the classifier head the encoder lacks."""
    torch.manual_seed(seed)
    full = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True)
    state = {}
    for i, (key, value) in enumerate(full.state_dict().items()):
        state[f"_layer{i:04d}." + key.rsplit(".", 1)[-1]] = torch.randn_like(value.float()).to(value.dtype)
    state["_conv_head.weight"] = torch.randn(1280, 320, 1, 1)
    state["_fc.weight"] = torch.randn(1000, 1280)
    return state, full


def test_imagenet_weights_are_mapped_by_position(tmp_path):
    state, full = wheel_style_state_dict()
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    model = LiteFPN(TINY)
    loaded = load_imagenet_encoder(model, path)
    own = model.encoder.state_dict()
    source = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    target = [k for k in full.state_dict() if not k.endswith("num_batches_tracked")]
    by_name = dict(zip(target, source))
    assert loaded == sum(1 for k in own if not k.endswith("num_batches_tracked"))
    for key in ("conv_stem.weight", "blocks.0.0.conv_dw.weight", "blocks.5.3.bn3.running_var"):
        torch.testing.assert_close(own[key], by_name[key])


def test_imagenet_weights_of_wrong_shape_are_refused(tmp_path):
    state, _ = wheel_style_state_dict()
    first = next(iter(state))
    state[first] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError, match="does not fit"):
        load_imagenet_encoder(LiteFPN(TINY), tmp_path / "bad.pth")
