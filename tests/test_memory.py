"""Out of memory: the detector retries smaller batches, then overlapping tiles, and says so when nothing fits.

Memory is made scarce by a wrapper that raises torch.OutOfMemoryError (what CUDA raises) when its
input holds more pixels than a limit, as a small GPU would.
"""

import pytest
import torch
from torch import nn

from pal_core import Detector, DetectorInfo, Preprocess
from pal_core.detect.memory import is_out_of_memory, run_tiled, tile_sizes


class LocalNet(nn.Module):
    """A fully convolutional test model with a small receptive field (about 19 px) and output stride 4,
    so overlapping tiles can reproduce the whole-image result exactly away from the padding."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                  nn.ReLU(), nn.Conv2d(8, 2, 3, stride=2, padding=1))

    def forward(self, x):
        return self.body(x)


class ScarceMemory(nn.Module):
    """Runs `net` only on inputs of at most `max_pixels` (batch x height x width); records every call."""

    def __init__(self, net: nn.Module, max_pixels: int, error=torch.OutOfMemoryError):
        super().__init__()
        self.net, self.max_pixels, self.error = net, max_pixels, error
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.max_pixels:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
        return self.net(x)


def detector(model: nn.Module, input_size: int | None = 256, batch_size: int = 8) -> Detector:
    return Detector(model, DetectorInfo("local", "test", "safetensors", "test"), Preprocess(input_size=input_size),
                    batch_size=batch_size)


def test_a_batch_that_does_not_fit_is_split_and_gives_the_same_result():
    images = torch.rand(6, 100, 120, 3, generator=torch.Generator().manual_seed(0))
    expected = detector(LocalNet()).predict(images)
    scarce = ScarceMemory(LocalNet(), max_pixels=2 * 256 * 256)
    assert torch.equal(detector(scarce).predict(images), expected)
    assert scarce.calls[0][0] == 6 and max(b for b, *_ in scarce.calls if b * 256 * 256 <= scarce.max_pixels) == 2


def test_a_single_image_that_does_not_fit_runs_in_tiles_close_to_the_whole():
    """Tolerance: identical (1e-5) away from the tile seams' padding; 0.02 max anywhere on this model."""
    image = torch.rand(1, 384, 448, 3, generator=torch.Generator().manual_seed(1))
    whole = detector(LocalNet(), input_size=None).predict(image)
    scarce = ScarceMemory(LocalNet(), max_pixels=200 * 200)  # even 224x224 tiles fail; 128 fits
    tiled = detector(scarce, input_size=None).predict(image)
    sides = [shape[2] for shape in scarce.calls]
    assert sides[0] == 384 and 224 in sides and 128 in sides  # whole, then halving tiles
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 0.02
    assert ((tiled > 0.5) == (whole > 0.5)).float().mean() > 0.999


def test_run_tiled_equals_the_whole_network_when_tiles_see_enough_context():
    x = torch.randn(1, 3, 200, 264, generator=torch.Generator().manual_seed(2))
    net = LocalNet().eval()
    with torch.no_grad():
        whole = net(x)
        tiled = run_tiled(net, x, 128)
    assert tiled.shape == whole.shape
    # Each output pixel is covered by a tile that contains its receptive field, except next to the
    # tile edges inside the overlap, where the ramp weights are small.
    assert float((tiled - whole).abs().max()) < 0.05
    inner = (tiled - whole)[:, :, 8:-8, 8:-8].abs()
    assert float(inner.mean()) < 1e-3


def test_nothing_fits_gives_a_clear_error():
    scarce = ScarceMemory(LocalNet(), max_pixels=64 * 64)
    with pytest.raises(torch.OutOfMemoryError, match="even in batches of one and tiles down to 128x128"):
        detector(scarce).predict(torch.rand(1, 64, 64, 3))


def test_the_cpu_allocator_failure_counts_and_other_errors_pass_through():
    cpu_failure = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 68719476736 bytes. Error code 12")
    assert is_out_of_memory(cpu_failure) and is_out_of_memory(torch.OutOfMemoryError("x"))
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(ValueError("memory"))
    images = torch.rand(4, 64, 64, 3)
    scarce = ScarceMemory(LocalNet(), max_pixels=256 * 256, error=lambda message: RuntimeError(cpu_failure.args[0]))
    assert torch.equal(detector(scarce).predict(images), detector(LocalNet()).predict(images))
    broken = ScarceMemory(LocalNet(), max_pixels=0, error=ValueError)
    with pytest.raises(ValueError, match="out of memory"):  # not memory: raised as it is, no retries
        detector(broken).predict(images)
    assert len(broken.calls) == 1


def test_tile_sizes_halve_down_to_the_minimum():
    assert tile_sizes(2048) == [1024, 512, 256, 128]
    assert tile_sizes(384) == [192, 128]
    assert tile_sizes(100) == [128]


def test_tiles_below_float32_are_guarded_and_counted_against_the_cost_bound():
    """An image too large for memory runs in tiles in every precision: the guard checks the bf16 tiles' map
    and computes undecided ones again in float32 tiles; with no budget left the next image goes to float32
    tiles directly. (band 0.99: every pixel counts as undecided.)"""
    from pal_core.detect.detector import PrecisionGuard

    images = [torch.rand(384, 448, 3, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    scarce = ScarceMemory(LocalNet(), max_pixels=200 * 200)
    guarded = Detector(scarce, DetectorInfo("local", "test", "safetensors", "test"), Preprocess(input_size=None),
                       dtype=torch.bfloat16, guard=PrecisionGuard(band=0.99, budget=0.0, cost_ratio=0.5))
    exact = guarded.predict(images, threshold=0.5)
    ledger = guarded.guard_counts
    assert (ledger.images, ledger.checked, ledger.recomputed, ledger.direct) == (2, 1, 1, 1)
    assert guarded.last_precisions == ["fp32", "fp32"] and ledger.last_undecided == [1.0]
    assert [shape[2] for shape in scarce.calls if shape[2] <= 128]  # bf16 ran in tiles (once: the first image)
    float32_calls = guarded._float32.calls
    # image 1 went from bf16 tiles to float32 tiles; image 2 was tried whole in float32 (no budget for bf16)
    assert sum(1 for shape in float32_calls if shape[2] == 384) == 1 and len(float32_calls) > 2
    reference = detector(ScarceMemory(LocalNet(), max_pixels=200 * 200), input_size=None).predict(images)
    assert all(torch.equal(a, b) for a, b in zip(exact, reference))  # float32's tiled maps exactly


def test_a_guarded_batch_split_after_out_of_memory_counts_each_image_once():
    """Tries within a batch grow (2, then 4 here): the first fits, the second runs out of memory, and the
    batch is run again in halves. The ledger counts each image once, as the maps say."""
    from pal_core.detect.detector import PrecisionGuard

    images = torch.rand(8, 40, 40, 3, generator=torch.Generator().manual_seed(7))
    scarce = ScarceMemory(LocalNet(), max_pixels=3 * 64 * 64)
    guarded = Detector(scarce, DetectorInfo("local", "test", "safetensors", "test"), Preprocess(input_size=64),
                       dtype=torch.bfloat16, guard=PrecisionGuard(band=1e-6, budget=0.1, cost_ratio=0.5))
    guarded.predict(images, threshold=0.5)
    ledger = guarded.guard_counts
    assert [shape[0] for shape in scarce.calls][:2] == [2, 4]  # 2 kept, then 4 out of memory: halves of 8 follow
    assert (ledger.images, ledger.checked + ledger.direct) == (8, 8)
    assert guarded.last_precisions.count("bf16") == ledger.checked - ledger.recomputed
