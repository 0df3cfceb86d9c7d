"""`Detector`: a loaded artifact-segmentation network and the code that runs it on images.

Images come in ComfyUI's IMAGE layout: float [B, H, W, 3] in 0..1 (a list of [H, W, 3] tensors for
images of different sizes). The network runs at `input_size` x `input_size` (PAL4VST's 512), or at
each image's own size when `input_size` is None, and its output is resized back to each image.
"""

from __future__ import annotations

import copy
import time
import weakref
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .devices import precision_name
from .guard import GuardLedger, PrecisionGuard
from .masks import DEFAULT_THRESHOLD, check_threshold, par_of_probability
from .memory import run_in_fitting_tiles, run_within_memory
from .preprocess import Preprocess

ImageBatch = torch.Tensor | Sequence[torch.Tensor]
# Called as progress(done, total) after each network batch, with images done so far and in all; it may
# raise to stop the work (ComfyUI's Cancel does). The same convention as `refine`'s progress.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class DetectorInfo:
    """What a detector is, for reports and saved metadata."""

    name: str
    source: str  # where it was loaded from
    format: str  # "safetensors", "mmseg", "torchscript-weights" (read as data) or "torchscript" (run as a program)
    architecture: str


# The float32 weights of each network a reduced-precision Detector casts, kept for the guard's
# recomputations. Keyed by the network object: load_detector's cache hands the same (by then cast)
# network to later Detectors, which must find the float32 copy made before the first cast.
_FLOAT32_COPIES: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def _float32_copy(model: nn.Module) -> nn.Module | None:
    """A float32 copy of `model` made while it is still float32, or None if it no longer is."""
    if model in _FLOAT32_COPIES:
        return _FLOAT32_COPIES[model]
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in tensors):
        return None
    twin = copy.deepcopy(model).eval()
    _FLOAT32_COPIES[model] = twin
    return twin


class Detector:
    """Runs an artifact-segmentation network on images and returns per-pixel artifact probabilities.

    `output` says what the network returns: "logits" ([B, C, h, w], class 1 = artifact) or
    "labels" (an argmax class map [B, 1, h, w], as the official TorchScript export does).
    The network runs on `device` in `dtype` (both already resolved, see `load_detector`); between
    runs its weights may be parked elsewhere with `offload()`, and they come back before the next.
    The square size it runs at is the preprocessing's `input_size` (None: each image's own size).

    Below float32, `guard` (a `PrecisionGuard`; `load_detector` gives one to precision "auto", whose
    promise is the masks of fp32, and none to an explicit bf16/fp16, which is raw speed) checks each
    image's map against the threshold given to `predict`/`mask`/`par` and computes undecided images
    again in float32, from a float32 copy of the weights made before they are cast (on the CPU that
    copy costs float32 weights' memory on top of the reduced ones; on a GPU it is moved there on the
    first recomputation). A network handed over already below float32 has no such copy and runs
    unguarded. The guard also bounds what it costs (see `pal_core.detect.guard`): `guard_counts` (a
    `GuardLedger`) counts what it did and the error it measured over the Detector's life, and
    `last_precisions` says which precision produced each map of the latest `predict`.
    """

    def __init__(
        self,
        model: nn.Module,
        info: DetectorInfo,
        preprocess: Preprocess = Preprocess(),
        output: Literal["logits", "labels"] = "logits",
        device: torch.device = torch.device("cpu"),
        dtype: torch.dtype = torch.float32,
        batch_size: int = 8,
        fixed_input_size: int | None = None,
        compile: bool = False,
        guard: PrecisionGuard | None = None,
    ):
        if output not in ("logits", "labels"):
            raise ValueError(f"output must be 'logits' or 'labels', not {output!r}")
        input_size = preprocess.input_size
        if fixed_input_size is not None and input_size != fixed_input_size:
            raise ValueError(
                f"{info.source} only runs at {fixed_input_size}x{fixed_input_size} (a traced, static-shape "
                f"model); use input_size={fixed_input_size}, or load an mmseg .pth / .safetensors checkpoint "
                "to run at other sizes")
        if input_size is not None and (not isinstance(input_size, int) or input_size < 32):
            raise ValueError(f"input_size must be an integer >= 32 or None (native size), not {input_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        if output == "labels" and (dtype != torch.float32 or compile):
            raise ValueError(f"{info.source}: a TorchScript model runs in the precision it was exported with "
                             "(float32) and is not compiled again; leave precision at auto or fp32, or load the "
                             "mmseg .pth checkpoint to use fp16/bf16 or compile")
        self.info = info
        self.preprocess = preprocess
        self.output = output
        self.batch_size = batch_size
        self.fixed_input_size = fixed_input_size
        self.device = torch.device(device)
        self.dtype = dtype
        self.compiled = compile
        self.model = model.eval()
        self.guard = guard
        self.guard_counts = GuardLedger()
        guarded = guard is not None and output == "logits" and dtype != torch.float32
        self._float32 = _float32_copy(self.model) if guarded else None  # before load() casts the weights
        self.load()
        # torch.compile traces on the first call (seconds to minutes); the module itself is shared.
        self._network = torch.compile(self.model) if compile else self.model

    def __repr__(self) -> str:
        size = "native" if self.input_size is None else self.input_size
        return (f"Detector(name={self.info.name!r}, format={self.info.format}, device={self.device}, "
                f"precision={self.precision}, input_size={size})")

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def input_size(self) -> int | None:
        return self.preprocess.input_size

    @property
    def precision(self) -> str:
        """'fp32', 'bf16' or 'fp16': what the network computes in first (reported by the CLI and nodes;
        with a guard, `last_precisions` says what produced each map)."""
        return precision_name(self.dtype)

    @property
    def guarded(self) -> bool:
        """Whether the guard checks this detector's maps (below float32, with a float32 copy to go back to)."""
        return self.guard is not None and self._float32 is not None

    @property
    def last_precisions(self) -> list[str | None]:
        """The precision that produced each map of the latest `predict` ('fp32' for an image the guard
        computed again or ran in float32 directly), in the images' order; None for an image not run."""
        return list(self.guard_counts.last_precisions)

    def with_input_size(self, input_size: int | None) -> "Detector":
        """The same loaded network run at another size (shares the weights, loads nothing)."""
        return Detector(self.model, self.info, replace(self.preprocess, input_size=input_size), self.output,
                        self.device, self.dtype, self.batch_size, self.fixed_input_size, self.compiled, self.guard)

    # ------------------------------------------------------------------------------------------
    # Where the weights live

    def weights_device(self) -> torch.device:
        """Where the weights are now: `device`, or where `offload()` parked them."""
        tensor = next(iter(self.model.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.model.buffers()), None)
        return self.device if tensor is None else tensor.device

    def load(self) -> None:
        """Puts the weights on `device` in `dtype` (done before every run; a no-op when they are there)."""
        where = self.weights_device()
        # "cuda" means the current GPU: weights on "cuda:0" are there already
        moved = where.type != self.device.type or (self.device.index is not None and where.index != self.device.index)
        if moved or self._needs_cast():
            if self.output == "labels":  # a TorchScript graph keeps the dtype it was traced with
                self.model.to(self.device)
            else:
                self.model.to(self.device, self.dtype)

    def offload(self, device: str | torch.device = "cpu") -> None:
        """Parks the weights on `device` (e.g. the CPU, to free GPU memory for other models between
        runs); the next `predict` moves them back to `self.device`."""
        self.model.to(torch.device(device))
        if self._float32 is not None:
            self._float32.to(torch.device(device))

    def _needs_cast(self) -> bool:
        if self.output == "labels":
            return False
        tensor = next(iter(self.model.parameters()), None)
        return tensor is not None and tensor.dtype != self.dtype

    # ------------------------------------------------------------------------------------------

    def predict(self, images: ImageBatch, progress: ProgressCallback | None = None,
                threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor | list[torch.Tensor]:
        """Artifact probability per pixel, at each image's own size.

        A tensor [B, H, W, 3] gives a float tensor [B, H, W] on the images' device; a list of
        [H, W, 3] tensors gives a list of [H, W] tensors. For a "labels" network (TorchScript) the
        probability is its 0/1 decision. `progress(done, total)` is called after each batch. When the
        device runs out of memory, the batch is split and then single images are run in tiles (see
        `memory.run_within_memory`). An image with a NaN or infinite pixel (an fp16 VAE decode can give
        them) is not run: its map is all NaN, so it cannot pass for a clean image.
        `threshold` is where masks will be cut: below float32 the guard keeps the maps decided
        there (see `pal_core.detect.guard`); pass the threshold you will use.
        """
        check_threshold(threshold)
        self.guard_counts.last_undecided = []
        frames, as_list = _split_images(images)
        precisions: list[str | None] = [None] * len(frames)
        results: list[torch.Tensor | None] = [None] * len(frames)
        runnable = []
        for i, frame in enumerate(frames):
            if bool(torch.isfinite(frame).all()):
                runnable.append(i)
            else:
                results[i] = torch.full(frame.shape[:2], float("nan"), dtype=torch.float32, device=frame.device)
        done = len(frames) - len(runnable)
        self.load()
        with torch.inference_mode():
            for indices in self._batches(frames, runnable):
                batch = [frames[i] for i in indices]
                probs = run_within_memory(partial(self._forward, threshold=threshold),
                                          partial(self._forward_tiled, threshold=threshold), batch, self.device)
                for i, (prob, precision) in zip(indices, probs):
                    check_finite_output(prob, i, self.info.name, precision)
                    results[i] = prob.to(frames[i].device)
                    precisions[i] = precision
                done += len(indices)
                if progress is not None:
                    progress(done, len(frames))
        self.guard_counts.last_precisions = precisions
        if as_list:
            return results
        if not results:  # an empty batch [0, H, W, 3] gives an empty [0, H, W]
            return torch.zeros(images.shape[:-1] if images.dim() == 4 else (0, 0, 0), dtype=torch.float32)
        return torch.stack(results)

    def mask(self, images: ImageBatch, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor | list[torch.Tensor]:
        """Binary artifact mask (bool) per image: probability above `threshold`."""
        probs = self.predict(images, threshold=threshold)
        if isinstance(probs, list):
            return [p > threshold for p in probs]
        return probs > threshold

    def par(self, images: ImageBatch, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
        """Perceptual Artifacts Ratio per image: artifact area / image area, as float [B].

        NaN for an image with non-finite pixels (see `predict`): callers rank it last.
        """
        probs = self.predict(images, threshold=threshold)
        if isinstance(probs, list):
            return torch.tensor([float(par_of_probability(p.unsqueeze(0), threshold)[0]) for p in probs])
        return par_of_probability(probs, threshold)

    # ------------------------------------------------------------------------------------------

    def _batches(self, frames: list[torch.Tensor], indices: list[int]) -> Iterator[list[int]]:
        """`indices` grouped into runs: any sizes together at a fixed input size, equal sizes in native mode."""
        groups: dict[tuple, list[int]] = {}
        for i in indices:
            key = () if self.input_size is not None else tuple(frames[i].shape[:2])
            groups.setdefault(key, []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start:start + self.batch_size]

    def _network_input(self, frames: list[torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
        """Preprocessed batch [B, 3, S, S] on the device in `dtype` (default: the detector's); frames of
        different sizes are resized one by one."""
        frames = [f.to(self.device) for f in frames]
        if all(f.shape == frames[0].shape for f in frames):
            x = self.preprocess(torch.stack(frames))
        else:
            x = torch.cat([self.preprocess(f.unsqueeze(0)) for f in frames])
        return x.to(dtype or self.dtype)

    def _forward(self, frames: list[torch.Tensor], threshold: float) -> list[tuple[torch.Tensor, str]]:
        """Frames [H, W, 3] (any sizes at a fixed input size) -> (probability map [H, W] float32, the
        precision that produced it) each. With a guard, the images run below float32 in tries as large
        as the ledger allows (a try that passes saves enough for a larger next one), those the guard
        sends back run again in float32 at once (so later tries use the error they measured), and the
        images the budget allows no try run in one float32 batch. Until float32's time per image is
        known, one image after a batch's first try runs in float32 directly: without that time a kept
        image saves nothing in the ledger's count, and tries would stay single images (slow on a GPU)."""
        if not self.guarded:
            maps = self._probabilities(frames, self._network(self._network_input(frames)))
            return [(prob, self.precision) for prob in maps]
        ledger = self.guard_counts
        counted = (ledger.images, ledger.checked, ledger.recomputed, ledger.direct)
        try:
            return self._guarded_forward(frames, threshold)
        except BaseException:
            # out of memory: run_within_memory runs these frames again in smaller parts; count them once
            # (what was measured on the way, times and errors, stays: it is true of this network)
            ledger.images, ledger.checked, ledger.recomputed, ledger.direct = counted
            raise

    def _guarded_forward(self, frames: list[torch.Tensor], threshold: float) -> list[tuple[torch.Tensor, str]]:
        results: list[tuple[torch.Tensor, str] | None] = [None] * len(frames)
        pending, ledger, tried_here = list(range(len(frames))), self.guard_counts, False
        while pending:
            if tried_here and not ledger.knows_cost_ratio(self.guard):  # one image in float32 to learn its time
                results[pending[0]] = (self._float32_maps([frames[pending[0]]], self._float32_network())[0], "fp32")
                ledger.record(0, 0, 1)
                pending = pending[1:]
                continue
            tried = ledger.reduced_share(self.guard, len(pending))
            if not tried:
                break
            chunk, pending, tried_here = pending[:tried], pending[tried:], True
            for i, result in zip(chunk, self._guarded_try([frames[i] for i in chunk], threshold)):
                results[i] = result
        if pending:
            for i, prob in zip(pending, self._float32_maps([frames[i] for i in pending], self._float32_network())):
                results[i] = (prob, "fp32")
            ledger.record(0, 0, len(pending))
        return results

    def _guarded_try(self, frames: list[torch.Tensor], threshold: float) -> list[tuple[torch.Tensor, str]]:
        """Frames run below float32 and checked; the undecided ones computed again in float32, where each
        pair measures the error (see `GuardLedger.compare`)."""
        x = self._network_input(frames)
        maps = self._timed(self.precision, len(frames), lambda: self._probabilities(frames, self._network(x)))
        again = self._undecided(maps, threshold)
        results = [(prob, self.precision) for prob in maps]
        if again:
            exact = self._float32_maps([frames[i] for i in again], self._float32_network())
            for i, prob in zip(again, exact):
                self.guard_counts.compare(self.guard, maps[i], prob, threshold)
                results[i] = (prob, "fp32")
        self.guard_counts.record(len(frames), len(again), 0)
        return results

    def _float32_maps(self, frames: list[torch.Tensor], network: Callable[[torch.Tensor], torch.Tensor]
                      ) -> list[torch.Tensor]:
        """Probability maps of `frames` from a float32 `network` (timed for the ledger)."""
        x = self._network_input(frames, torch.float32)
        return self._timed("fp32", len(frames), lambda: self._probabilities(frames, network(x)))

    def _forward_tiled(self, frame: torch.Tensor, threshold: float) -> tuple[torch.Tensor, str]:
        """One frame's probability map with the network run on the largest overlapping tiles that fit."""
        if not self.guarded:
            x = self._network_input([frame])
            return self._probabilities([frame], run_in_fitting_tiles(self._network, x))[0], self.precision
        tried = self.guard_counts.reduced_share(self.guard, 1)
        reduced = None
        if tried:
            x = self._network_input([frame])
            reduced = self._timed(self.precision, 1, lambda: self._probabilities(
                [frame], run_in_fitting_tiles(self._network, x))[0])
            if not self._undecided([reduced], threshold):
                self.guard_counts.record(1, 0, 0)
                return reduced, self.precision
        network = self._float32_network()
        prob = self._float32_maps([frame], lambda x: run_in_fitting_tiles(network, x))[0]
        if reduced is not None:
            self.guard_counts.compare(self.guard, reduced, prob, threshold)
        self.guard_counts.record(tried, tried, 1 - tried)
        return prob, "fp32"

    def _timed(self, precision: str, images: int, compute: Callable[[], object]):
        """compute(), its time added to the ledger's (which measures the cost ratio between precisions)."""
        start = time.perf_counter()
        result = compute()
        if self.device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(self.device)
        self.guard_counts.time(precision, time.perf_counter() - start, images)
        return result

    def _undecided(self, maps: list[torch.Tensor], threshold: float) -> list[int]:
        """Indices of the maps the guard sends back to float32."""
        again = []
        for i, prob in enumerate(maps):
            share = self.guard_counts.flip_share(self.guard, prob, threshold)
            self.guard_counts.last_undecided.append(share)
            if share > self.guard.share:
                again.append(i)
        return again

    def _float32_network(self) -> nn.Module:
        """The float32 copy on the device (moved there on first use)."""
        tensor = next(iter(self._float32.parameters()), None)
        if tensor is not None and tensor.device != self.weights_device():
            self._float32.to(self.weights_device())
        return self._float32

    def _probabilities(self, frames: list[torch.Tensor], out: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for frame, item in zip(frames, out):
            size = tuple(frame.shape[:2])
            if self.output == "labels":  # the official TorchScript: argmax map [1, h, w]
                labels = (item.reshape(1, 1, *item.shape[-2:]) == 1).float()
                maps.append(F.interpolate(labels, size=size, mode="nearest")[0, 0])
            else:
                maps.append(artifact_probability(item.unsqueeze(0).float(), size)[0])
        return maps


class NonFiniteOutputError(ValueError):
    """The network gave NaN or infinite probabilities for a finite image: its weights or precision are broken."""


def check_finite_output(probability: torch.Tensor, index: int, model: str, precision: str) -> None:
    """Raises when a map computed from a finite image is not finite: NaN is below every threshold, so
    such a map would pass for a clean image (PAR 0) instead of a broken model."""
    if not bool(torch.isfinite(probability).all()):
        advice = "run at --precision fp32" if precision != "fp32" else "check or replace the model file"
        raise NonFiniteOutputError(
            f"the detector {model} gave NaN or infinite probabilities for image {index} at {precision} (its "
            f"weights or its precision are broken, so no score was made); {advice}")


def artifact_probability(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Softmax probability of class 1 after resizing logits bilinearly to `size` (as mmseg resizes).

    With two classes, softmax(l)[1] = sigmoid(l1 - l0), and resizing is linear, so the difference is
    resized alone: half the memory for large images, the same numbers.
    """
    if logits.shape[1] == 1:
        score = logits
    elif logits.shape[1] == 2:
        score = logits[:, 1:2] - logits[:, 0:1]
    else:
        prob = torch.softmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=False), dim=1)
        return prob[:, 1]
    return torch.sigmoid(F.interpolate(score, size=size, mode="bilinear", align_corners=False))[:, 0]


def _as_rgb(frame: torch.Tensor, what: str) -> torch.Tensor:
    """[H, W, C] with C in 1, 3, 4 -> float [H, W, 3] in 0..1 (grey is repeated, alpha dropped)."""
    if frame.dim() != 3 or frame.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{what} has shape {tuple(frame.shape)}; expected [H, W, 3] channels-last (ComfyUI IMAGE layout; "
            "1 and 4 channels are accepted too). A [3, H, W] tensor needs .permute(1, 2, 0)")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"{what} is empty: shape {tuple(frame.shape)}")
    if frame.dtype == torch.uint8:
        frame = frame.float() / 255.0
    elif not frame.is_floating_point():
        raise ValueError(f"{what} has dtype {frame.dtype}; expected float in 0..1 (or uint8)")
    if frame.shape[-1] == 1:
        frame = frame.expand(-1, -1, 3)
    elif frame.shape[-1] == 4:
        frame = frame[..., :3]  # as PIL's convert("RGB") in the official script: alpha is ignored
    return frame


def _split_images(images: ImageBatch) -> tuple[list[torch.Tensor], bool]:
    """Normalises the accepted inputs to a list of [H, W, 3] float tensors, and whether a list came in."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(f"images have shape {tuple(images.shape)}; expected [B, H, W, 3]")
        return [_as_rgb(f, f"image {i}") for i, f in enumerate(images)], False
    if isinstance(images, (list, tuple)):
        frames = []
        for i, frame in enumerate(images):
            if not isinstance(frame, torch.Tensor):
                raise TypeError(f"image {i} is a {type(frame).__name__}; expected a torch tensor [H, W, 3]")
            if frame.dim() == 4 and frame.shape[0] == 1:
                frame = frame[0]
            frames.append(_as_rgb(frame, f"image {i}"))
        return frames, True
    raise TypeError(f"images must be a tensor [B, H, W, 3] or a list of [H, W, 3] tensors, not {type(images).__name__}")
