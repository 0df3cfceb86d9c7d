"""Swin Transformer backbone that computes exactly what mmsegmentation's `SwinTransformer` computes.

Built from timm's Swin parts (`WindowAttention`, `Mlp`, `PatchEmbed`, `PatchMerging`, window
partitioning). Where mmsegmentation behaves differently from timm, this module follows
mmsegmentation, because the official PAL4VST weights were trained there:

1. Windows: the normed tokens are zero-padded at the bottom/right up to a multiple of the window
   *before* the cyclic shift, and the shift mask is built on that padded grid. Padded tokens are not
   masked out (they take part in attention as keys whose values equal the qkv bias).
2. The window is never shrunk and the shift never dropped for small feature maps.
3. Patch merging sits at the end of a stage (its output feeds the next stage). Its 4C channel order
   differs from timm's; the checkpoint converter permutes the weights, so timm's layer is used as is.
4. Every stage output gets its own LayerNorm.
5. Patch embedding pads the input bottom/right to a multiple of the patch size, then LayerNorm.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed
from timm.models.swin_transformer import PatchMerging, WindowAttention, window_partition, window_reverse
from torch import nn

SHIFT_MASK_VALUE = -100.0  # the value both mmseg and the original Swin put between shifted regions


def shifted_window_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Attention mask [num_windows, window^2, window^2] for a padded grid of height x width tokens.

    Tokens that came from different regions of the cyclically shifted grid must not attend to each
    other; the regions are cut at -window and -shift, as in mmseg (on the padded grid).
    """
    region = torch.zeros((1, height, width, 1), device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            region[:, rows, cols, :] = label
            label += 1
    windows = window_partition(region, (window, window)).view(-1, window * window)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, SHIFT_MASK_VALUE)


class SwinBlock(nn.Module):
    """One (shifted-)window attention block with mmseg's pad-then-shift order."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        # Fused attention (SDPA) gives the same result within float rounding and is faster on CPU and GPU.
        self.attn.fused_attn = hasattr(F, "scaled_dot_product_attention")
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    def _shift_mask(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (height, width, device, dtype)
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = shifted_window_mask(height, width, self.window_size, self.shift_size, device).to(dtype)
            if len(self._mask_cache) > 16:  # many image sizes in native mode: keep the cache bounded
                self._mask_cache.clear()
            self._mask_cache[key] = mask
        return mask

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        win = self.window_size
        pad_h = (win - height % win) % win
        pad_w = (win - width % win) % win
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        padded_h, padded_w = height + pad_h, width + pad_w

        mask = None
        if self.shift_size:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            mask = self._shift_mask(padded_h, padded_w, x.device, x.dtype)

        windows = window_partition(x, (win, win)).view(-1, win * win, channels)
        windows = self.attn(windows, mask=mask)
        x = window_reverse(windows.view(-1, win, win, channels), (win, win), padded_h, padded_w)

        if self.shift_size:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        return x[:, :height, :width, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, C] channels-last tokens."""
        x = x + self.drop_path1(self._attention(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Blocks alternating plain and shifted windows, then (except in the last stage) patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: Sequence[float],
        downsample: bool,
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, shift=i % 2 == 1, mlp_ratio=mlp_ratio,
                      qkv_bias=qkv_bias, drop_path=drop_path[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, out_dim=2 * dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the stage output (before merging) and the merged input of the next stage."""
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else None)


class SwinBackbone(nn.Module):
    """Hierarchical Swin features: four NCHW maps at strides 4, 8, 16, 32 (for patch size 4)."""

    def __init__(
        self,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 12,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must have the same length")
        self.patch_embed = PatchEmbed(
            img_size=None, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False, dynamic_img_pad=True,
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        self.out_norms = nn.ModuleList()
        self.out_channels: list[int] = []
        first = 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = embed_dim * 2**i
            self.stages.append(SwinStage(
                dim, depth, heads, window_size, mlp_ratio, qkv_bias,
                drop_path=rates[first:first + depth], downsample=i < len(depths) - 1,
            ))
            self.out_norms.append(nn.LayerNorm(dim))
            self.out_channels.append(dim)
            first += depth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: normalised images [B, 3, H, W] of any size. Returns one NCHW map per stage."""
        x = self.patch_embed(x)
        features = []
        for stage, norm in zip(self.stages, self.out_norms):
            out, x = stage(x)
            features.append(norm(out).permute(0, 3, 1, 2).contiguous())
        return features
