"""Folding BatchNorm into the convolution before it, for inference.

In eval mode a BatchNorm is a per-channel affine map, so `bn(conv(x))` equals one convolution with
scaled weights and a shifted bias. Folding it removes a full pass over every feature map: about a
third of PAL-lite's CPU time was spent in separate BatchNorm calls.

The pairs are found by position: a `Conv2d` registered directly before a `BatchNorm2d` in the same
parent, which is how our `ConvBNReLU` and timm's EfficientNet blocks (`conv_dw, bn1`, `conv_pw, bn2`,
...) are written, each BatchNorm fed by that convolution. timm's `BatchNormAct2d` keeps its
activation after folding. Every architecture we ship is checked in tests/test_fusion.py (outputs
equal to 1e-5); a model for training must be read unfused (`read_checkpoint`).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _bn_replacement(bn: nn.BatchNorm2d) -> nn.Module:
    """What stays of a folded BatchNorm: nothing, or timm's BatchNormAct2d activation (its dropout is
    a no-op at inference)."""
    act = getattr(bn, "act", None)
    return act if isinstance(act, nn.Module) else nn.Identity()


def fuse_conv_bn(model: nn.Module) -> int:
    """Folds every (Conv2d, BatchNorm2d) pair of `model` in place; returns how many were folded.

    The model must be in eval mode (folding uses the running statistics, as eval mode does).
    """
    if model.training:
        raise ValueError("fuse_conv_bn needs a model in eval mode (call model.eval() first)")
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.running_mean is not None and conv.out_channels == bn.num_features):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, _bn_replacement(bn))
                folded += 1
    return folded
