"""Swin + UPerNet segmentation network (the PAL4VST architecture) and its mmsegmentation converter.

`SwinUPerNet` maps normalised images [B, 3, H, W] to class logits at 1/4 resolution, as
mmsegmentation's `EncoderDecoder.forward` does before its final resize. The converter beside it
(`config_from_mmseg` + `checkpoint_filter_fn`) turns an mmsegmentation 1.x checkpoint into this
model's state dict key by key; every hyper-parameter is read from the checkpoint's shapes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ModelConfig
from .swin import SwinBackbone
from .upernet import UPerHead


@dataclass(frozen=True)
class SwinUPerNetConfig(ModelConfig):
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    patch_size: int = 4
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    head_channels: int = 512
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    num_classes: int = 2


class SwinUPerNet(nn.Module):
    architecture = "swin_upernet"
    # precision="auto" may run it in bf16/fp16: 2.9x faster on CPUs with AMX, 1.75-2x with AVX512-BF16 alone,
    # masks of fp32 kept by the Detector's precision guard (tests/test_precision.py, docs/benchmarks-precision.md).
    auto_low_precision = True

    def __init__(self, config: SwinUPerNetConfig = SwinUPerNetConfig(), drop_path_rate: float = 0.0):
        super().__init__()
        self.config = config
        self.backbone = SwinBackbone(
            embed_dim=config.embed_dim, depths=config.depths, num_heads=config.num_heads,
            window_size=config.window_size, patch_size=config.patch_size, mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias, drop_path_rate=drop_path_rate,
        )
        self.decode_head = UPerHead(
            self.backbone.out_channels, channels=config.head_channels,
            pool_scales=config.pool_scales, num_classes=config.num_classes,
        )

    @classmethod
    def from_config(cls, values: dict) -> "SwinUPerNet":
        return cls(SwinUPerNetConfig.from_dict(values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(x))


# ----------------------------------------------------------------------------------------------
# mmsegmentation 1.x checkpoints


class CheckpointMismatch(ValueError):
    """The state dict does not have the keys or shapes of an mmseg Swin + UPerHead model."""


def is_mmseg_swin_upernet(state_dict: dict) -> bool:
    return "backbone.patch_embed.projection.weight" in state_dict and "decode_head.conv_seg.weight" in state_dict


def _require(state_dict: dict, key: str) -> torch.Tensor:
    if key not in state_dict:
        raise CheckpointMismatch(f"missing key '{key}'")
    return state_dict[key]


def _count(state_dict: dict, pattern: str) -> int:
    """Number of distinct integers matched by the single group of `pattern` over the keys."""
    regex = re.compile(pattern)
    return len({m.group(1) for k in state_dict if (m := regex.match(k))})


def _pool_scales_from_meta(meta: dict | None, count: int) -> tuple[int, ...]:
    """mmseg keeps the config text in meta['cfg']; the pool scales have no shape to read them from."""
    text = str((meta or {}).get("cfg", "") or (meta or {}).get("config", ""))
    found = re.search(r"pool_scales\s*=\s*\(([\d,\s]+)\)", text)
    if found:
        scales = tuple(int(s) for s in found.group(1).split(",") if s.strip())
        if len(scales) == count:
            return scales
    if count == 4:
        return (1, 2, 3, 6)  # mmseg's default and PAL4VST's value
    raise CheckpointMismatch(
        f"the checkpoint has {count} pyramid pooling branches but no config giving their scales; "
        "expected 4 (scales 1, 2, 3, 6) or a meta['cfg'] text with pool_scales")


def config_from_mmseg(state_dict: dict, meta: dict | None = None) -> SwinUPerNetConfig:
    """Reads every hyper-parameter of the network from the checkpoint's keys and shapes."""
    if "backbone.absolute_pos_embed" in state_dict:
        raise CheckpointMismatch("absolute position embeddings (use_abs_pos_embed=True) are not supported")
    proj = _require(state_dict, "backbone.patch_embed.projection.weight")
    embed_dim, patch_size = proj.shape[0], proj.shape[-1]
    num_stages = _count(state_dict, r"backbone\.stages\.(\d+)\.")
    if num_stages == 0:
        raise CheckpointMismatch("no 'backbone.stages.N' keys")
    depths, heads, windows = [], [], []
    for s in range(num_stages):
        depths.append(_count(state_dict, rf"backbone\.stages\.{s}\.blocks\.(\d+)\."))
        table = _require(state_dict, f"backbone.stages.{s}.blocks.0.attn.w_msa.relative_position_bias_table")
        heads.append(table.shape[1])
        windows.append((math.isqrt(table.shape[0]) + 1) // 2)  # table has (2w - 1)^2 rows
    if len(set(windows)) != 1:
        raise CheckpointMismatch(f"stages use different window sizes {windows}")
    hidden = _require(state_dict, "backbone.stages.0.blocks.0.ffn.layers.0.0.weight").shape[0]
    seg = _require(state_dict, "decode_head.conv_seg.weight")
    num_scales = _count(state_dict, r"decode_head\.psp_modules\.(\d+)\.")
    return SwinUPerNetConfig(
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(heads),
        window_size=windows[0],
        patch_size=patch_size,
        mlp_ratio=hidden / embed_dim,
        qkv_bias="backbone.stages.0.blocks.0.attn.w_msa.qkv.bias" in state_dict,
        head_channels=seg.shape[1],
        pool_scales=_pool_scales_from_meta(meta, num_scales),
        num_classes=seg.shape[0],
    )


# mmseg key pattern -> our key pattern; applied in order, first match wins.
_KEY_MAP: list[tuple[str, str]] = [
    (r"^backbone\.patch_embed\.projection\.", "backbone.patch_embed.proj."),
    (r"^backbone\.patch_embed\.norm\.", "backbone.patch_embed.norm."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.(qkv|proj)\.", r"backbone.stages.\1.blocks.\2.attn.\3."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.relative_position_bias_table$",
     r"backbone.stages.\1.blocks.\2.attn.relative_position_bias_table"),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.(norm1|norm2)\.", r"backbone.stages.\1.blocks.\2.\3."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.0\.0\.", r"backbone.stages.\1.blocks.\2.mlp.fc1."),
    (r"^backbone\.stages\.(\d+)\.blocks\.(\d+)\.ffn\.layers\.1\.", r"backbone.stages.\1.blocks.\2.mlp.fc2."),
    (r"^backbone\.stages\.(\d+)\.downsample\.(norm|reduction)\.", r"backbone.stages.\1.downsample.\2."),
    (r"^backbone\.norm(\d+)\.", r"backbone.out_norms.\1."),
    (r"^decode_head\.psp_modules\.(\d+)\.1\.(conv|bn)\.", r"decode_head.ppm.convs.\1.\2."),
    (r"^decode_head\.bottleneck\.(conv|bn)\.", r"decode_head.ppm.bottleneck.\1."),
    (r"^decode_head\.(lateral_convs|fpn_convs)\.(\d+)\.(conv|bn)\.", r"decode_head.\1.\2.\3."),
    (r"^decode_head\.fpn_bottleneck\.(conv|bn)\.", r"decode_head.fpn_bottleneck.\1."),
    (r"^decode_head\.conv_seg\.", "decode_head.classifier."),
]
# Not needed at inference: the auxiliary FCN head (training only) and index buffers we rebuild.
_DROPPED = re.compile(r"^auxiliary_head\.|\.relative_position_index$")


def _unfold_to_timm_order(weight: torch.Tensor, dim_in: int) -> torch.Tensor:
    """Re-orders the 4C merging channels from mmseg's nn.Unfold order to timm's.

    mmseg's channel index is c*4 + kh*2 + kw; timm's is (kw*2 + kh)*C + c, with (kh, kw) the position
    in the 2x2 neighbourhood. `weight` has the 4C channels in its last dimension.
    """
    c = dim_in
    perm = torch.empty(4 * c, dtype=torch.long)
    for kh in range(2):
        for kw in range(2):
            timm_index = (kw * 2 + kh) * c + torch.arange(c)
            perm[timm_index] = torch.arange(c) * 4 + kh * 2 + kw
    return weight[..., perm]


def checkpoint_filter_fn(state_dict: dict, model: SwinUPerNet) -> dict[str, torch.Tensor]:
    """Converts an mmseg Swin + UPerHead state dict to `model`'s keys, checking every key and shape."""
    converted: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        if _DROPPED.search(key):
            continue
        for pattern, replacement in _KEY_MAP:
            new_key, hits = re.subn(pattern, replacement, key)
            if hits:
                break
        else:
            unmapped.append(key)
            continue
        if ".downsample." in new_key:
            stage = int(new_key.split(".")[2])
            value = _unfold_to_timm_order(value, model.config.embed_dim * 2**stage)
        converted[new_key] = value

    expected = model.state_dict()
    problems = [f"unexpected key '{k}'" for k in unmapped]
    problems += [f"unexpected key '{k}'" for k in converted if k not in expected]
    problems += [f"missing key '{k}'" for k in expected if k not in converted]
    problems += [
        f"shape of '{k}' is {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
        for k, v in converted.items() if k in expected and v.shape != expected[k].shape
    ]
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise CheckpointMismatch(shown)
    return converted


def from_mmseg_checkpoint(state_dict: dict, meta: dict | None = None) -> SwinUPerNet:
    """Builds the network described by an mmseg state dict and loads its weights."""
    model = SwinUPerNet(config_from_mmseg(state_dict, meta))
    model.load_state_dict(checkpoint_filter_fn(state_dict, model))
    return model
