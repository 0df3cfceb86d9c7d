"""The crop plan: one square, zoomed-in crop around each artifact region, and how to put it back.

PAL4VST's refinement zooms in: each connected component gets a square crop 1.5x its longest side,
the crop is inpainted at the inpainter's working resolution, and the result goes back in place.
A `CropPlan` is computed once from the masks and holds everything the later steps need (image index,
square box, scale, masks), so extracting crops and compositing results are pure functions of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..detect.masks import Component, ComponentLabels

DEFAULT_ZOOM = 1.5  # the paper: crop side = 1.5 x the component's longest side
DEFAULT_MIN_SIDE = 64  # below this a crop holds too little context for an inpainter
DEFAULT_RESOLUTION = 512  # SD 1.x/2.x work at 512; use 1024 for SDXL
DEFAULT_MULTIPLE = 8  # latent diffusion needs multiples of 8 (the VAE's downsampling)

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), end-exclusive, in image pixels


def round_to_multiple(value: int, multiple: int) -> int:
    """Nearest multiple of `multiple`, halves rounded up (never below `multiple` itself)."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, not {multiple}")
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)


def square_box(component_box: Box, height: int, width: int, zoom: float = DEFAULT_ZOOM,
               min_side: int = DEFAULT_MIN_SIDE) -> Box:
    """The square crop around a component box: side = zoom x longest side, at least `min_side`.

    The square is centred on the component, then moved (not shrunk) to stay inside the image. It
    never exceeds the image's longer side (a larger crop would only add padding); along an axis
    shorter than the side it is centred on the image and the missing rows or columns are padded.
    """
    if zoom < 1.0:
        raise ValueError(f"zoom must be >= 1 (the crop must contain the region), not {zoom}")
    x0, y0, x1, y1 = component_box
    longest = max(x1 - x0, y1 - y0)
    side = min(max(min_side, math.ceil(zoom * longest)), max(height, width))
    left = _place(x0, x1, width, side)
    top = _place(y0, y1, height, side)
    return left, top, left + side, top + side


def _place(start: int, end: int, length: int, side: int) -> int:
    """Start of a `side`-long window centred on [start, end), kept inside [0, length) when it fits."""
    if side >= length:
        return -((side - length) // 2)
    centred = int(math.floor((start + end) / 2 - side / 2))
    return min(max(centred, 0), length - side)


def boxes_overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def union_box(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def clip_box(box: Box, height: int, width: int) -> Box:
    """The part of a box inside the image."""
    return max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)


@dataclass(frozen=True)
class CropRegion:
    """One crop: which image, which component labels it fixes, and where its square box lies."""

    image_index: int
    index_in_image: int  # region i of its image; diffusion inpainters use seed + i
    labels: tuple[int, ...]  # component labels (in the plan's label map) this crop fixes
    component_box: Box  # tight box around those components
    box: Box  # the square crop; may extend past the image, where it is edge-padded
    area: int  # mask pixels of the components

    @property
    def side(self) -> int:
        return self.box[2] - self.box[0]


@dataclass
class CropPlan:
    """Everything needed to cut crops out of a batch and put inpainted crops back.

    `region_masks[i]` is region i's mask at image resolution over its square box (bool [side, side],
    False in padding); `crop_masks` are the same masks at the working size (float [N, size, size]),
    as the inpainter gets them. Crops are `size` x `size`: one tensor for the whole batch.
    """

    image_sizes: list[tuple[int, int]]  # (H, W) per image of the batch
    size: int
    regions: list[CropRegion]
    region_masks: list[torch.Tensor]
    crop_masks: torch.Tensor
    skipped: list[str | None] = field(default_factory=list)  # per image, why it has no regions

    def __len__(self) -> int:
        return len(self.regions)

    def scale(self, i: int) -> float:
        """Zoom factor of region i: working size / crop side (> 1 means the crop was enlarged)."""
        return self.size / self.regions[i].side

    def regions_of(self, image_index: int) -> list[int]:
        return [i for i, r in enumerate(self.regions) if r.image_index == image_index]

    def subset(self, keep: list[int]) -> "CropPlan":
        """The plan restricted to the regions at indices `keep` (e.g. the fixes worth keeping)."""
        index = torch.tensor(keep, dtype=torch.long, device=self.crop_masks.device)
        return CropPlan(self.image_sizes, self.size, [self.regions[i] for i in keep],
                        [self.region_masks[i] for i in keep], self.crop_masks.index_select(0, index),
                        list(self.skipped))

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Crops [N, size, size, C] from images [B, H, W, C], on the images' device and dtype.

        Parts of a box outside the image repeat the edge pixels (what an inpainter sees as context
        there matters little, and a flat colour would be taken as content).
        """
        self._check_images(images)
        channels = images.shape[-1]
        if not self.regions:
            return images.new_zeros((0, self.size, self.size, channels))
        crops = [resize_square(padded_crop(images[r.image_index], r.box), self.size) for r in self.regions]
        return torch.stack(crops).to(images.dtype)

    def _check_images(self, images: torch.Tensor) -> None:
        if images.dim() != 4:
            raise ValueError(f"images have shape {tuple(images.shape)}; expected [B, H, W, C]")
        sizes = [tuple(images.shape[1:3])] * images.shape[0]
        if sizes != [tuple(s) for s in self.image_sizes]:
            raise ValueError(f"images of shape {tuple(images.shape)} do not match the plan, made for "
                             f"{len(self.image_sizes)} image(s) of size {self.image_sizes[:1]}")


def padded_crop(image: torch.Tensor, box: Box) -> torch.Tensor:
    """image [H, W, C] -> the box's pixels [side, side, C], edge-replicated where the box leaves the image."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = box
    cx0, cy0, cx1, cy1 = clip_box(box, height, width)
    inside = image[cy0:cy1, cx0:cx1]
    pads = (cx0 - x0, x1 - cx1, cy0 - y0, y1 - cy1)
    if not any(pads):
        return inside
    work = inside.permute(2, 0, 1).unsqueeze(0).float()  # replicate padding is not implemented for every dtype
    return F.pad(work, pads, mode="replicate")[0].permute(1, 2, 0).to(image.dtype)


def resize_square(crop: torch.Tensor, size: int) -> torch.Tensor:
    """[h, w, C] -> [size, size, C] (bicubic, antialiased when shrinking, clamped to 0..1); float32 out."""
    if crop.shape[0] == size and crop.shape[1] == size:
        return crop.float()
    x = crop.permute(2, 0, 1).unsqueeze(0).float()
    x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).clamp_(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Bool [h, w] -> float 0/1 [size, size]; any coverage of a working pixel marks it, so the
    inpainter's mask never misses a region pixel."""
    x = mask.float()[None, None]
    if tuple(mask.shape) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x[0, 0] > 1e-3).float()


def plan_crops(components: ComponentLabels, zoom: float = DEFAULT_ZOOM, min_side: int = DEFAULT_MIN_SIDE,
               resolution: int = DEFAULT_RESOLUTION, multiple: int = DEFAULT_MULTIPLE,
               merge_overlapping: bool = True) -> CropPlan:
    """A square crop per component of each image (see `square_box`), all resized to one working size.

    `resolution` is rounded to a multiple of `multiple` (8 for SD latents, 64 for some UNets).
    With `merge_overlapping`, components whose squares overlap share one crop (recomputed around
    both, until no two squares overlap): separate crops would each paste their unfixed view of the
    other's region back over its fix.
    """
    if min_side < 1:
        raise ValueError(f"min_side must be >= 1, not {min_side}")
    size = round_to_multiple(resolution, multiple)
    labels = components.labels
    batch, height, width = labels.shape
    regions: list[CropRegion] = []
    masks: list[torch.Tensor] = []
    for b in range(batch):
        groups = _group_components(components.for_image(b), height, width, zoom, min_side, merge_overlapping)
        for i, group in enumerate(groups):
            component_box = union_box([c.box for c in group])
            box = square_box(component_box, height, width, zoom, min_side)
            region = CropRegion(b, i, tuple(c.label for c in group), component_box, box, sum(c.area for c in group))
            regions.append(region)
            masks.append(_region_mask(labels[b], region))
    crop_masks = (torch.stack([resize_mask(m, size) for m in masks]) if masks
                  else torch.zeros((0, size, size), device=labels.device))
    return CropPlan([(height, width)] * batch, size, regions, masks, crop_masks, list(components.skipped))


def _group_components(components: list[Component], height: int, width: int, zoom: float, min_side: int,
                      merge: bool) -> list[list[Component]]:
    """Components of one image grouped so that no two groups' squares overlap (or one group each).

    Each pass joins every pair of groups whose squares overlap (union-find), then recomputes the
    squares, which grow with their groups; it stops when a pass joins nothing.
    """
    groups = [[c] for c in components]
    while merge and len(groups) > 1:
        boxes = [square_box(union_box([c.box for c in g]), height, width, zoom, min_side) for g in groups]
        parent = list(range(len(groups)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if boxes_overlap(boxes[i], boxes[j]):
                    parent[root(j)] = root(i)
        if all(root(i) == i for i in range(len(groups))):
            break
        joined: dict[int, list[Component]] = {}
        for i, group in enumerate(groups):
            joined.setdefault(root(i), []).extend(group)
        groups = [sorted(g, key=lambda c: c.label) for g in joined.values()]
    return sorted(groups, key=lambda g: g[0].label)


def _region_mask(labels: torch.Tensor, region: CropRegion) -> torch.Tensor:
    """Bool [side, side]: pixels of the region's components inside its square (False in padding)."""
    height, width = labels.shape
    x0, y0, x1, y1 = region.box
    cx0, cy0, cx1, cy1 = clip_box(region.box, height, width)
    wanted = torch.tensor(region.labels, dtype=labels.dtype, device=labels.device)
    mask = torch.zeros((region.side, region.side), dtype=torch.bool, device=labels.device)
    mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = torch.isin(labels[cy0:cy1, cx0:cx1], wanted)
    return mask
