"""`Detector`: a loaded artifact-segmentation network and the code that runs it on images.

Images come in ComfyUI's IMAGE layout: float [B, H, W, 3] in 0..1 (a list of [H, W, 3] tensors for
images of different sizes). The network runs at `input_size` x `input_size` (PAL4VST's 512), or at
each image's own size when `input_size` is None, and its output is resized back to each image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .devices import resolve_device, resolve_dtype
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
    format: str  # "safetensors", "mmseg", "torchscript"
    architecture: str


class Detector:
    """Runs an artifact-segmentation network on images and returns per-pixel artifact probabilities.

    `output` says what the network returns: "logits" ([B, C, h, w], class 1 = artifact) or
    "labels" (an argmax class map [B, 1, h, w], as the official TorchScript export does).
    """

    def __init__(
        self,
        model: nn.Module,
        info: DetectorInfo,
        preprocess: Preprocess = Preprocess(),
        output: Literal["logits", "labels"] = "logits",
        input_size: int | None = 512,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
        fixed_input_size: int | None = None,
    ):
        if output not in ("logits", "labels"):
            raise ValueError(f"output must be 'logits' or 'labels', not {output!r}")
        if fixed_input_size is not None and input_size != fixed_input_size:
            raise ValueError(
                f"{info.source} only runs at {fixed_input_size}x{fixed_input_size} (a traced, static-shape "
                f"model); use input_size={fixed_input_size}, or load an mmseg .pth / .safetensors checkpoint "
                "to run at other sizes")
        if input_size is not None and (not isinstance(input_size, int) or input_size < 32):
            raise ValueError(f"input_size must be an integer >= 32 or None (native size), not {input_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.info = info
        self.preprocess = preprocess
        self.output = output
        self.input_size = input_size
        self.batch_size = batch_size
        self.fixed_input_size = fixed_input_size
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if output == "labels" and self.dtype != torch.float32:
            raise ValueError(f"{info.source}: a TorchScript model runs in the precision it was exported with; "
                             "leave dtype unset (float32), or load the mmseg .pth checkpoint to use fp16/bf16")
        self.model = model.eval().to(self.device)
        if output == "logits":  # a TorchScript graph keeps the dtype it was traced with
            self.model.to(self.dtype)

    def __repr__(self) -> str:
        size = "native" if self.input_size is None else self.input_size
        return (f"Detector(name={self.info.name!r}, format={self.info.format}, device={self.device}, "
                f"dtype={self.dtype}, input_size={size})")

    @property
    def name(self) -> str:
        return self.info.name

    def with_input_size(self, input_size: int | None) -> "Detector":
        """The same loaded network run at another size (shares the weights, loads nothing)."""
        return Detector(self.model, self.info, self.preprocess, self.output, input_size, self.device,
                        self.dtype, self.batch_size, self.fixed_input_size)

    # ------------------------------------------------------------------------------------------

    def predict(self, images: ImageBatch, progress: ProgressCallback | None = None) -> torch.Tensor | list[torch.Tensor]:
        """Artifact probability per pixel, at each image's own size.

        A tensor [B, H, W, 3] gives a float tensor [B, H, W] on the images' device; a list of
        [H, W, 3] tensors gives a list of [H, W] tensors. For a "labels" network (TorchScript) the
        probability is its 0/1 decision. `progress(done, total)` is called after each batch.
        """
        frames, as_list = _split_images(images)
        results: list[torch.Tensor | None] = [None] * len(frames)
        done = 0
        with torch.inference_mode():
            for indices in self._batches(frames):
                probs = self._forward([frames[i] for i in indices])
                for i, prob in zip(indices, probs):
                    results[i] = prob.to(frames[i].device)
                done += len(indices)
                if progress is not None:
                    progress(done, len(frames))
        if as_list:
            return results
        if not results:  # an empty batch [0, H, W, 3] gives an empty [0, H, W]
            return torch.zeros(images.shape[:-1] if images.dim() == 4 else (0, 0, 0), dtype=torch.float32)
        return torch.stack(results)

    def mask(self, images: ImageBatch, threshold: float = 0.5) -> torch.Tensor | list[torch.Tensor]:
        """Binary artifact mask (bool) per image: probability above `threshold`."""
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), not {threshold}")
        probs = self.predict(images)
        if isinstance(probs, list):
            return [p > threshold for p in probs]
        return probs > threshold

    def par(self, images: ImageBatch, threshold: float = 0.5) -> torch.Tensor:
        """Perceptual Artifacts Ratio per image: artifact area / image area, as float [B]."""
        masks = self.mask(images, threshold)
        if isinstance(masks, list):
            return torch.tensor([m.float().mean().item() for m in masks], dtype=torch.float32)
        return masks.flatten(1).float().mean(dim=1)

    # ------------------------------------------------------------------------------------------

    def _batches(self, frames: list[torch.Tensor]) -> Iterator[list[int]]:
        """Indices of images run together: any sizes at a fixed input size, equal sizes in native mode."""
        groups: dict[tuple, list[int]] = {}
        for i, frame in enumerate(frames):
            key = () if self.input_size is not None else tuple(frame.shape[:2])
            groups.setdefault(key, []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                yield indices[start:start + self.batch_size]

    def _network_input(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """Preprocessed batch [B, 3, S, S] on the device; frames of different sizes are resized one by one."""
        frames = [f.to(self.device) for f in frames]
        if all(f.shape == frames[0].shape for f in frames):
            x = self.preprocess(torch.stack(frames), self.input_size)
        else:
            x = torch.cat([self.preprocess(f.unsqueeze(0), self.input_size) for f in frames])
        return x.to(self.dtype)

    def _forward(self, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        """Frames [H, W, 3] (any sizes at a fixed input size) -> probability maps [H, W], float32."""
        out = self.model(self._network_input(frames))
        maps = []
        for frame, item in zip(frames, out):
            size = tuple(frame.shape[:2])
            if self.output == "labels":  # the official TorchScript: argmax map [1, h, w]
                labels = (item.reshape(1, 1, *item.shape[-2:]) == 1).float()
                maps.append(F.interpolate(labels, size=size, mode="nearest")[0, 0])
            else:
                maps.append(artifact_probability(item.unsqueeze(0).float(), size)[0])
        return maps


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
