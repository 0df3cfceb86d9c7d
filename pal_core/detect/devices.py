"""Choosing the torch device and precision a detector runs with.

`precision="auto"` (the default) picks the fastest precision the hardware runs natively and that
keeps the masks of fp32 (measured in benchmarks/detector.py, checked in tests/test_precision.py):
- CPU: bfloat16 where the CPU has bf16 matrix units (Intel AMX or AVX512-BF16; oneDNN then runs
  bf16 convolutions and matrix products natively: for Swin-B + UPerNet at 512x512 about 2.9x fp32 on a
  Xeon with AMX, 1.75-2.0x on an AMD EPYC Zen 4 with AVX512-BF16 alone, 2 threads), else float32;
- CUDA: bfloat16 where the GPU computes it natively (Ampere and later), else float16 on GPUs with
  fp16 tensor cores (compute capability 7.0+), else float32;
- anything else (MPS): float32.
The capability comes from what torch reports about the hardware, never from a model name.
Below fp32 the Detector's `PrecisionGuard` computes again in fp32 any image with more than 0.1% of its
pixels within 0.1 of the mask threshold, where the rounding could flip them, and tries the lower precision
only while the run stays within 5% of fp32's cost (plus one image's forward), so a model whose maps keep
failing the check runs in fp32 rather than in both (see detector.py, `GuardLedger`).
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}
_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or "auto" picks CUDA when available, else the CPU. An unavailable device is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for, but CUDA is not available here; use device='cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device '{device}' was asked for, but MPS is not available here; use device='cpu'")
    return device


def cpu_has_bf16_units() -> bool:
    """True where this CPU multiplies bf16 matrices natively (AMX tiles or AVX512-BF16), as torch sees it."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cuda_supports_bf16(device: torch.device) -> bool:
    """Native bf16 on this GPU (compute capability 8.0+); torch's emulation on older GPUs is slow."""
    return torch.cuda.get_device_capability(device)[0] >= 8 and torch.cuda.is_bf16_supported(including_emulation=False)


def cuda_has_fp16_tensor_cores(device: torch.device) -> bool:
    """Volta (7.0) and later: fp16 is fast. Older GPUs run fp16 at a fraction of fp32's speed."""
    return torch.cuda.get_device_capability(device)[0] >= 7


def auto_dtype(device: torch.device) -> torch.dtype:
    """The fastest precision `device` runs natively (see the module docstring)."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16_units() else torch.float32
    if device.type == "cuda":
        if cuda_supports_bf16(device):
            return torch.bfloat16
        return torch.float16 if cuda_has_fp16_tensor_cores(device) else torch.float32
    return torch.float32


def is_auto(dtype: str | torch.dtype | None) -> bool:
    return dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, low_precision: bool = True) -> torch.dtype:
    """The precision to run at. None or "auto" picks per device (`auto_dtype`); for a model that runs
    only in float32 (`low_precision=False`, e.g. a TorchScript export) "auto" means float32. fp16 is
    refused on the CPU, where it is slow or unsupported."""
    if is_auto(dtype):
        return auto_dtype(device) if low_precision else torch.float32
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPES:
            raise ValueError(f"unknown precision '{dtype}'; use one of {', '.join(PRECISIONS)}")
        dtype = _DTYPES[dtype.lower()]
    if dtype not in _NAMES:
        raise ValueError(f"precision {dtype} is not supported; use float32, float16 or bfloat16")
    if dtype == torch.float16 and device.type == "cpu":
        raise ValueError("float16 is not supported on the CPU; use fp32, bf16 or auto there, fp16 on CUDA")
    return dtype


def precision_name(dtype: torch.dtype) -> str:
    """'fp32', 'fp16' or 'bf16', as reports and the command line spell it."""
    return _NAMES[dtype]
