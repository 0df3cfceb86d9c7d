"""sRGB <-> CIE Lab (D65) on torch tensors, for matching an inpainted region's colours to its surround.

Lab is used because its channels are close to perceptually independent: shifting mean and spread
per channel corrects a diffusion model's colour cast without the hue errors the same correction
causes in RGB.
"""

from __future__ import annotations

import torch

_RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_DELTA = 6.0 / 29.0


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [..., 3] in 0..1 -> Lab [..., 3] (L in 0..100), float32, same device."""
    rgb = rgb.float().clamp(0.0, 1.0)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor(_RGB_TO_XYZ, device=rgb.device)
    xyz = linear @ matrix.T / torch.tensor(_WHITE_D65, device=rgb.device)
    f = torch.where(xyz > _DELTA ** 3, xyz.clamp_min(1e-12) ** (1.0 / 3.0), xyz / (3 * _DELTA ** 2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(-1)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab [..., 3] -> sRGB [..., 3] in 0..1 (out-of-gamut colours clamped), float32."""
    lab = lab.float()
    fy = (lab[..., 0] + 16.0) / 116.0
    f = torch.stack((fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0), dim=-1)
    xyz = torch.where(f > _DELTA, f ** 3, 3 * _DELTA ** 2 * (f - 4.0 / 29.0))
    xyz = xyz * torch.tensor(_WHITE_D65, device=lab.device)
    linear = (xyz @ torch.linalg.inv(torch.tensor(_RGB_TO_XYZ, device=lab.device)).T).clamp(0.0, 1.0)
    rgb = torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    return rgb.clamp(0.0, 1.0)


def match_color(source: torch.Tensor, source_ring: torch.Tensor, target_ring: torch.Tensor,
                max_gain: float = 2.0) -> torch.Tensor:
    """`source` [..., 3] recoloured so that its ring pixels' Lab mean and spread match the target's.

    source_ring, target_ring: [K, 3] RGB pixels of the same ring in the inpainted and the original
    crop. The spread ratio is limited to [1/max_gain, max_gain] so a flat ring cannot blow colours up.
    """
    src_lab, tgt_lab = rgb_to_lab(source_ring), rgb_to_lab(target_ring)
    src_mean, tgt_mean = src_lab.mean(0), tgt_lab.mean(0)
    gain = (tgt_lab.std(0) + 1e-3) / (src_lab.std(0) + 1e-3)
    gain = gain.clamp(1.0 / max_gain, max_gain)
    return lab_to_rgb((rgb_to_lab(source) - src_mean) * gain + tgt_mean)
