"""Network architectures a detector can be built from, by the name stored in our checkpoints.

Each architecture is an `nn.Module` class with a class attribute `architecture` (its name), a
`config` (a `ModelConfig`, saved as a JSON dict), `from_config(dict)`, and `auto_low_precision`
(whether precision="auto" may run it below fp32: only where its masks were shown to stay those of
fp32). Its forward maps normalised images [B, 3, H, W] to class logits [B, num_classes, h, w] at any resolution h x w (class 1 is
"artifact"); the detector resizes them back to each image's size.
"""

from __future__ import annotations

from torch import nn

from .lite_fpn import LiteFPN
from .swin_upernet import SwinUPerNet

ARCHITECTURES: dict[str, type[nn.Module]] = {
    SwinUPerNet.architecture: SwinUPerNet,
    LiteFPN.architecture: LiteFPN,
}


def build_model(architecture: str, config: dict) -> nn.Module:
    """Builds an untrained network of a registered architecture from its config dict."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{architecture}'; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[architecture].from_config(config)
