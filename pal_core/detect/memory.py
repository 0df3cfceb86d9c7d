"""Running a network within the memory a device has: smaller batches first, then overlapping tiles.

A large image at native size, or a big batch on a small GPU, can exhaust memory. Instead of failing,
the detector retries: a batch is split in halves until single images run; a single image that still
does not fit is run in overlapping tiles, halving the tile on each failure (as ComfyUI's tiled
upscale does). Tiles are blended with linear ramps across their overlap, so there are no seams;
what changes is only that the network sees a tile's context rather than the whole image.
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import torch

ALIGN = 32  # tile sizes and offsets: a multiple of every network's total stride
MIN_TILE = 128
T = TypeVar("T")


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and the CPU allocator's failure (a plain RuntimeError)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("DefaultCPUAllocator: can't allocate memory" in text
                                                or "DefaultCPUAllocator: not enough memory" in text)


def free_cached_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_within_memory(forward: Callable[[list], list[T]], forward_tiled: Callable[[object], T],
                      items: Sequence, device: torch.device) -> list[T]:
    """`forward(items)`; on out-of-memory, the two halves one after the other, down to single items,
    and a single item that still does not fit goes to `forward_tiled(item)`."""
    try:
        return forward(list(items))
    except Exception as error:  # noqa: BLE001 - anything but out-of-memory is raised again
        if not is_out_of_memory(error):
            raise
    # Out of the except block: the failed attempt's traceback (and the tensors it holds) is gone.
    free_cached_memory(device)
    if len(items) == 1:
        return [forward_tiled(items[0])]
    half = (len(items) + 1) // 2
    return (run_within_memory(forward, forward_tiled, items[:half], device)
            + run_within_memory(forward, forward_tiled, items[half:], device))


def tile_sizes(side: int) -> list[int]:
    """Tile sides to try for an input whose longer side is `side`: half of it, then halving, down to MIN_TILE."""
    sizes = [max(_align_up(max(side // 2, 1)), MIN_TILE)]
    while sizes[-1] > MIN_TILE:
        sizes.append(max(_align_up(sizes[-1] // 2), MIN_TILE))
    return sizes


def run_in_fitting_tiles(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`run_tiled` with the largest tile (from `tile_sizes`) that fits in memory."""
    sizes = tile_sizes(max(x.shape[2:]))
    for tile in sizes:
        try:
            return run_tiled(network, x, tile)
        except Exception as error:  # noqa: BLE001 - anything but out-of-memory is raised again
            if not is_out_of_memory(error):
                raise
        free_cached_memory(x.device)
    raise torch.OutOfMemoryError(
        f"out of memory on {x.device} for a {x.shape[2]}x{x.shape[3]} network input, even in batches of one and "
        f"tiles down to {sizes[-1]}x{sizes[-1]}; use a smaller input size (e.g. 512 instead of native), "
        "another device, or free memory used by other models")


def run_tiled(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int) -> torch.Tensor:
    """The network's output map for `x` [1, 3, H, W], computed on overlapping `tile` x `tile` pieces.

    The input is padded bottom/right (zeros: the mean colour after normalisation) to whole tiles,
    each tile's output is weighted by ramps across the overlap with its neighbours (weights sum to 1)
    and the map is cut back to ceil(H / stride) x ceil(W / stride), as a network padding internally
    (Swin) returns it.
    """
    if x.shape[0] != 1:
        raise ValueError(f"run_tiled takes one image at a time, not a batch of {x.shape[0]}")
    tile = _align_up(tile)
    height, width = x.shape[2:]
    overlap = max(ALIGN, (tile // 4) // ALIGN * ALIGN)
    rows = _offsets(height, tile, overlap)
    cols = _offsets(width, tile, overlap)
    padded_h, padded_w = rows[-1] + tile, cols[-1] + tile
    x = torch.nn.functional.pad(x, (0, padded_w - width, 0, padded_h - height))
    canvas = weights = None
    stride = 1
    for top in rows:
        for left in cols:
            out = network(x[:, :, top:top + tile, left:left + tile]).float()
            if canvas is None:
                stride = tile // out.shape[-1]
                if stride * out.shape[-1] != tile or stride * out.shape[-2] != tile:
                    raise ValueError(f"tiling needs an output stride dividing {tile}; got a "
                                     f"{tuple(out.shape[-2:])} map for a {tile}x{tile} tile")
                canvas = out.new_zeros(1, out.shape[1], padded_h // stride, padded_w // stride)
                weights = out.new_zeros(1, 1, padded_h // stride, padded_w // stride)
            ramp = (_ramp(tile // stride, overlap // stride, top > 0, top + tile < padded_h, out.device)[:, None]
                    * _ramp(tile // stride, overlap // stride, left > 0, left + tile < padded_w, out.device)[None, :])
            r, c = top // stride, left // stride
            canvas[:, :, r:r + tile // stride, c:c + tile // stride] += out * ramp
            weights[:, :, r:r + tile // stride, c:c + tile // stride] += ramp
    out_h, out_w = -(-height // stride), -(-width // stride)
    return (canvas / weights)[:, :, :out_h, :out_w]


def _align_up(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def _offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts covering [0, length): every `tile - overlap`, the last one padded past the end."""
    step = tile - overlap
    offsets = [0]
    while offsets[-1] + tile < length:
        offsets.append(offsets[-1] + step)
    return offsets


def _ramp(size: int, overlap: int, fade_in: bool, fade_out: bool, device: torch.device) -> torch.Tensor:
    """1-D weights: 1 inside, rising over the first / falling over the last `overlap` entries where a
    neighbour tile overlaps; neighbours' ramps sum to 1 in the overlap."""
    ramp = torch.ones(size, device=device)
    steps = (torch.arange(overlap, device=device, dtype=torch.float32) + 0.5) / overlap
    if fade_in:
        ramp[:overlap] = steps
    if fade_out:
        ramp[size - overlap:] = steps.flip(0)
    return ramp
