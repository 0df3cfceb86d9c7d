"""Procedural perceptual artifacts with exact masks, for training a detector without labelled data.

Each artifact kind imitates a local failure of image generators (PAL4VST's taxonomy): inpainting
smears, melted / warped texture, transplanted patches whose colour and light do not match, blurry or
badly upsampled patches, GAN checkerboards and grids, repeated texture, colour blotches, broken lines,
garbled fine structure (strokes, text-like glyphs), and the failures of modern samplers: fused /
ghosted objects, shredded structure under plausible texture, mushy detail painted over with texture.

The contract every kind keeps: the result differs from the input only inside the returned region
mask (composited with that hard mask), and a region whose change would be invisible is rejected
rather than labelled. So a label never marks untouched pixels and never misses a changed one.
Images are uint8 RGB numpy arrays [H, W, 3]; masks are bool [H, W].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

# Below this mean absolute change (0..255, over the region) an edit is too faint to call an artifact.
MIN_VISIBLE_CHANGE = 6.0
# Unchanged areas inside a region narrower than this (pixels) are still labelled.
LABEL_GAP = 7


# ----------------------------------------------------------------------------------------------
# Region shapes


def random_region(shape: tuple[int, int], area_fraction: float, rng: np.random.Generator,
                  center: tuple[float, float] | None = None) -> np.ndarray:
    """An irregular blob covering about `area_fraction` of the image, around `center` (y, x) or anywhere.

    Built from a few overlapping ellipses with a noisy, smoothed outline: the shapes of PAL4VST's
    hand-drawn labels (rounded, lumpy, sometimes elongated), never squares.
    """
    h, w = shape
    area = max(area_fraction * h * w, 12.0)
    radius = np.sqrt(area / np.pi)
    if center is None:
        cy, cx = rng.uniform(radius * 0.3, h - radius * 0.3), rng.uniform(radius * 0.3, w - radius * 0.3)
    else:
        cy, cx = center
    canvas = np.zeros((h, w), np.float32)
    elongation = rng.uniform(1.0, 3.0)
    angle = rng.uniform(0, 180)
    for _ in range(int(rng.integers(1, 5))):
        oy, ox = rng.normal(0, radius * 0.35, 2)
        ay = max(1, int(radius * rng.uniform(0.5, 1.0) * np.sqrt(elongation)))
        ax = max(1, int(radius * rng.uniform(0.5, 1.0) / np.sqrt(elongation)))
        cv2.ellipse(canvas, (int(cx + ox), int(cy + oy)), (ax, ay), angle + rng.normal(0, 20), 0, 360, 1.0, -1)
    # A lumpy outline: add smooth noise and threshold again.
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), max(radius * 0.25, 1.0))
    noise /= noise.std() + 1e-6
    soft = cv2.GaussianBlur(canvas, (0, 0), max(radius * 0.15, 0.8)) + 0.12 * noise
    region = soft > 0.5
    if region.sum() < 8:  # tiny regions can vanish under the noise; fall back to the plain ellipses
        region = canvas > 0.5
    return region


def random_stroke_region(shape: tuple[int, int], rng: np.random.Generator, thickness: int | None = None) -> np.ndarray:
    """A thin curved band: where broken edges, stray lines and garbled strokes live."""
    h, w = shape
    canvas = np.zeros((h, w), np.uint8)
    length = rng.uniform(0.08, 0.4) * min(h, w)
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    heading = rng.uniform(0, 2 * np.pi)
    points = [(x, y)]
    for _ in range(8):
        heading += rng.normal(0, 0.35)
        x += np.cos(heading) * length / 8
        y += np.sin(heading) * length / 8
        points.append((x, y))
    thickness = thickness or int(rng.integers(6, 22))
    cv2.polylines(canvas, [np.array(points, np.int32)], False, 1, thickness)
    return canvas > 0


def detailed_point(image: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """A random (y, x) drawn with probability growing with local detail (edge density).

    Generators fail on structure (hands, faces, lettering, fine objects), rarely on flat sky, so
    part of the artifacts are placed where the picture has detail.
    """
    h, w = image.shape[:2]
    small = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (max(w // 8, 1), max(h // 8, 1)),
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    edges = np.abs(cv2.Sobel(small, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(small, cv2.CV_32F, 0, 1))
    weights = cv2.GaussianBlur(edges, (0, 0), 1.5).ravel() + 1e-3
    index = int(rng.choice(weights.size, p=weights / weights.sum()))
    y, x = divmod(index, small.shape[1])
    return (y + rng.uniform(0, 1)) * h / small.shape[0], (x + rng.uniform(0, 1)) * w / small.shape[1]


def bounding_box(region: np.ndarray, margin: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    ys, xs = np.nonzero(region)
    y0, y1 = max(0, ys.min() - margin), min(shape[0], ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(shape[1], xs.max() + margin + 1)
    return slice(y0, y1), slice(x0, x1)


# ----------------------------------------------------------------------------------------------
# Artifact kinds: each maps (image, region, rng) to an edited full image; compositing happens after.


def inpaint_smear(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Content filled in by diffusion from the border: the smooth, structureless smear of a failed inpaint."""
    method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
    filled = cv2.inpaint(image, region.astype(np.uint8) * 255, float(rng.uniform(3, 12)), method)
    if rng.random() < 0.5:  # generators often leave a soft, slightly noisy fill rather than a clean one
        filled = np.clip(filled + rng.normal(0, rng.uniform(1, 6), filled.shape), 0, 255).astype(np.uint8)
    return filled


def _smooth_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return field / (np.abs(field).max() + 1e-6)


def _remap(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def _displace(image: np.ndarray, amplitude: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`image` resampled through a smooth random displacement field: up to `amplitude` pixels, with
    correlation length `sigma` (long: a gentle bend; short: shredded structure)."""
    h, w = image.shape[:2]
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    return _remap(image, grid_x + amplitude * _smooth_field((h, w), sigma, rng),
                  grid_y + amplitude * _smooth_field((h, w), sigma, rng))


def melted_warp(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A strong local elastic warp or swirl: melted faces, bent lines, liquefied texture."""
    h, w = region.shape
    ys, xs = np.nonzero(region)
    size = max(np.ptp(ys), np.ptp(xs), 8)
    if rng.random() < 0.35:  # a swirl around the region's centre
        cy, cx = ys.mean(), xs.mean()
        grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
        dy, dx = grid_y - cy, grid_x - cx
        dist = np.sqrt(dy ** 2 + dx ** 2)
        twist = rng.choice([-1, 1]) * rng.uniform(1.0, 3.0) * np.exp(-(dist / (size * 0.5)) ** 2)
        cos, sin = np.cos(twist), np.sin(twist)
        return _remap(image, cx + dx * cos - dy * sin, cy + dx * sin + dy * cos)
    amplitude = rng.uniform(0.08, 0.3) * size + 3
    sigma = max(size * rng.uniform(0.08, 0.25), 2.0)
    return _displace(image, amplitude, sigma, rng)


def _colour_mismatch(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Different white balance, exposure and contrast: the patch was lit by another light."""
    patch = patch.astype(np.float32)
    gain = rng.uniform(0.65, 1.4, 3) * rng.uniform(0.75, 1.3)
    bias = rng.normal(0, 18, 3)
    mean = patch.mean(axis=(0, 1), keepdims=True)
    contrast = rng.uniform(0.6, 1.5)
    return np.clip((patch - mean) * contrast + mean * gain + bias, 0, 255).astype(np.uint8)


def transplanted_patch(image: np.ndarray, region: np.ndarray, rng: np.random.Generator,
                       donor: np.ndarray | None = None) -> np.ndarray:
    """Content from elsewhere (this image or another), pasted with mismatched colour: a composition seam."""
    h, w = region.shape
    source = donor if donor is not None and donor.shape == image.shape and rng.random() < 0.5 else image
    shift = (int(rng.integers(-h // 2, h // 2)), int(rng.integers(-w // 2, w // 2)))
    moved = np.roll(source, shift, axis=(0, 1))
    if rng.random() < 0.3:
        moved = moved[:, ::-1] if rng.random() < 0.5 else moved[::-1]
    return _colour_mismatch(np.ascontiguousarray(moved), rng) if rng.random() < 0.8 else np.ascontiguousarray(moved)


def bad_upsampling(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Detail lost: downscaled and naively upscaled (blocky or mushy), or over-smoothed."""
    h, w = region.shape
    choice = rng.random()
    if choice < 0.4:
        factor = rng.uniform(4, 12)
        small = cv2.resize(image, (max(2, int(w / factor)), max(2, int(h / factor))), interpolation=cv2.INTER_AREA)
        interpolation = cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_LINEAR
        return cv2.resize(small, (w, h), interpolation=interpolation)
    if choice < 0.75:
        return cv2.GaussianBlur(image, (0, 0), rng.uniform(2.5, 7))
    # An edge-preserving, plastic "over-denoised" look.
    smoothed = image
    for _ in range(int(rng.integers(2, 5))):
        smoothed = cv2.bilateralFilter(smoothed, 9, rng.uniform(40, 120), rng.uniform(5, 15))
    return cv2.medianBlur(smoothed, 7)


def checkerboard_grid(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The periodic checkerboard / grid of transposed-convolution upsampling in GANs."""
    h, w = region.shape
    period = int(rng.choice([2, 3, 4, 6, 8]))
    yy, xx = np.mgrid[0:h, 0:w]
    if rng.random() < 0.5:
        pattern = (((yy // max(1, period // 2)) + (xx // max(1, period // 2))) % 2) * 2.0 - 1.0
    else:  # grid lines
        pattern = ((yy % period == 0) | (xx % period == 0)).astype(np.float32) * 2.0 - 1.0
    amplitude = rng.uniform(12, 40)
    tint = rng.uniform(0.6, 1.0, 3)
    result = image.astype(np.float32) + amplitude * pattern[..., None] * tint
    return np.clip(result, 0, 255).astype(np.uint8)


def repeated_texture(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small tile repeated across the region: copy-paste texture, duplicated objects."""
    h, w = region.shape
    ys, xs = np.nonzero(region)
    tile = int(np.clip(max(np.ptp(ys), np.ptp(xs)) * rng.uniform(0.15, 0.4), 6, 64))
    y0 = int(rng.integers(0, max(1, h - tile)))
    x0 = int(rng.integers(0, max(1, w - tile)))
    patch = image[y0:y0 + tile, x0:x0 + tile]
    tiled = np.tile(patch, (h // tile + 1, w // tile + 1, 1))[:h, :w]
    return np.ascontiguousarray(tiled)


def colour_blotch(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth stain of a wrong, often saturated colour, or a local hue shift."""
    if rng.random() < 0.4:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int32)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(25, 155))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1.0, 2.0) + 40, 0, 255)
        return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    colour = rng.uniform(0, 255, 3)
    alpha = rng.uniform(0.35, 0.85) * (0.6 + 0.4 * _smooth_field(region.shape, 12, rng)[..., None])
    return np.clip(image * (1 - alpha) + colour * alpha, 0, 255).astype(np.uint8)


def broken_lines(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Structure that does not continue: the region is shifted against its surroundings (a dislocation)
    or overdrawn with stray, jittery lines in the image's own colours."""
    h, w = region.shape
    if rng.random() < 0.5:
        dy, dx = rng.integers(4, 18, 2) * rng.choice([-1, 1], 2)
        return np.ascontiguousarray(np.roll(image, (int(dy), int(dx)), axis=(0, 1)))
    result = image.copy()
    ys, xs = np.nonzero(region)
    for _ in range(int(rng.integers(2, 7))):
        i, j = rng.integers(0, len(ys), 2)
        colour = image[ys[int(rng.integers(0, len(ys)))], xs[int(rng.integers(0, len(xs)))]].astype(int)
        colour = np.clip(colour + rng.normal(0, 60, 3), 0, 255)
        mid = ((xs[i] + xs[j]) // 2 + rng.integers(-10, 11), (ys[i] + ys[j]) // 2 + rng.integers(-10, 11))
        pts = np.array([(xs[i], ys[i]), mid, (xs[j], ys[j])], np.int32)
        cv2.polylines(result, [pts], False, tuple(float(c) for c in colour), int(rng.integers(1, 5)), cv2.LINE_AA)
    return result


GLYPHS = "ABCDEFGHKMNPRSTWXYZabdeghkmnqrstwxyz0123456789&%@#"


def garbled_structure(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fine structure gone wrong: text-like glyph soup or extra finger-like strokes, then warped."""
    h, w = region.shape
    ys, xs = np.nonzero(region)
    result = image.copy()
    colour = tuple(float(c) for c in np.clip(rng.uniform(0, 255, 3), 0, 255))
    if rng.random() < 0.5:
        scale = float(np.clip((np.ptp(ys) + 1) / 40, 0.3, 2.0))
        for _ in range(int(rng.integers(2, 8))):
            k = int(rng.integers(0, len(ys)))
            text = "".join(rng.choice(list(GLYPHS), int(rng.integers(2, 7))))
            cv2.putText(result, text, (int(xs[k]) - 20, int(ys[k]) + 5), int(rng.integers(0, 8)), scale, colour,
                        int(rng.integers(1, 4)), cv2.LINE_AA)
    else:  # finger-like: a fan of elongated rounded strokes in a colour taken from the region
        base = image[ys[len(ys) // 2], xs[len(xs) // 2]].astype(float)
        cy, cx = int(ys.mean()), int(xs.mean())
        size = max(np.ptp(ys), np.ptp(xs), 10)
        for _ in range(int(rng.integers(3, 7))):
            angle = rng.uniform(0, 2 * np.pi)
            length = size * rng.uniform(0.3, 0.6)
            end = (int(cx + np.cos(angle) * length), int(cy + np.sin(angle) * length))
            shade = tuple(float(c) for c in np.clip(base * rng.uniform(0.7, 1.2) + rng.normal(0, 10, 3), 0, 255))
            cv2.line(result, (cx, cy), end, shade, max(2, int(size * rng.uniform(0.06, 0.14))), cv2.LINE_AA)
    return melted_warp(result, region, rng) if rng.random() < 0.6 else result


def high_frequency_noise(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unresolved noise or colour banding: a patch the sampler did not finish denoising, or posterised."""
    if rng.random() < 0.5:
        sigma = rng.uniform(15, 45)
        noise = rng.normal(0, sigma, image.shape) if rng.random() < 0.5 else rng.normal(0, sigma, image.shape[:2])[..., None]
        return np.clip(image + noise, 0, 255).astype(np.uint8)
    levels = int(rng.integers(3, 7))
    step = 256 // levels
    return ((image // step) * step + step // 2).astype(np.uint8)


def fused_ghost(image: np.ndarray, region: np.ndarray, rng: np.random.Generator,
                donor: np.ndarray | None = None) -> np.ndarray:
    """Two things melted into one: a warped copy of other content shows through at partial opacity
    (doubled limbs, fused objects, the double exposure of a sampler torn between two layouts)."""
    h, w = region.shape
    source = donor if donor is not None and donor.shape == image.shape and rng.random() < 0.5 else image
    shift = (int(rng.integers(-h // 3, h // 3 + 1)), int(rng.integers(-w // 3, w // 3 + 1)))
    ghost = melted_warp(np.ascontiguousarray(np.roll(source, shift, axis=(0, 1))), region, rng)
    alpha = rng.uniform(0.3, 0.7) * (0.75 + 0.25 * _smooth_field((h, w), max(h, w) / 8, rng))[..., None]
    return np.clip(image * (1 - alpha) + ghost * alpha, 0, 255).astype(np.uint8)


def scrambled_structure(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Plausible texture, impossible structure: the region's own content shredded by a fine, strong
    displacement field (short correlation length, large amplitude), then bent as a whole: the
    incoherent hands, faces and machinery of generators, without the tell-tale straight edges of tiles."""
    ys, xs = np.nonzero(region)
    size = max(np.ptp(ys), np.ptp(xs), 8)
    sigma = max(size * rng.uniform(0.03, 0.07), 1.5)
    amplitude = size * rng.uniform(0.08, 0.2) + 2
    shredded = _displace(image, amplitude, sigma, rng)
    return melted_warp(shredded, region, rng) if rng.random() < 0.5 else shredded


def hallucinated_detail(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Structure lost and generic texture painted over it: the mushy yet sharp-looking background
    figures and faces of a sampler that ran out of resolution."""
    h, w = region.shape
    factor = rng.uniform(4, 10)
    small = cv2.resize(image, (max(2, int(w / factor)), max(2, int(h / factor))), interpolation=cv2.INTER_AREA)
    mush = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    mush = melted_warp(np.clip(mush, 0, 255).astype(np.uint8), region, rng).astype(np.float32)
    blurred = cv2.GaussianBlur(mush, (0, 0), 1.5)
    texture = rng.normal(0, rng.uniform(4, 12), (h, w, 1))
    texture = cv2.GaussianBlur(texture.astype(np.float32), (0, 0), rng.uniform(0.5, 1.2))[..., None]
    return np.clip(mush + rng.uniform(0.8, 2.0) * (mush - blurred) + texture, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ArtifactKind:
    name: str
    apply: Callable[..., np.ndarray]
    region: str  # "blob" or "stroke"
    weight: float  # relative frequency in generated data


ARTIFACT_KINDS: tuple[ArtifactKind, ...] = (
    ArtifactKind("inpaint_smear", inpaint_smear, "blob", 1.2),
    ArtifactKind("melted_warp", melted_warp, "blob", 1.5),
    ArtifactKind("transplanted_patch", transplanted_patch, "blob", 1.2),
    ArtifactKind("bad_upsampling", bad_upsampling, "blob", 1.0),
    ArtifactKind("checkerboard_grid", checkerboard_grid, "blob", 0.7),
    ArtifactKind("repeated_texture", repeated_texture, "blob", 0.8),
    ArtifactKind("colour_blotch", colour_blotch, "blob", 0.8),
    ArtifactKind("broken_lines", broken_lines, "stroke", 0.9),
    ArtifactKind("garbled_structure", garbled_structure, "blob", 1.0),
    ArtifactKind("high_frequency_noise", high_frequency_noise, "blob", 0.6),
    ArtifactKind("fused_ghost", fused_ghost, "blob", 1.0),
    ArtifactKind("scrambled_structure", scrambled_structure, "blob", 1.2),
    ArtifactKind("hallucinated_detail", hallucinated_detail, "blob", 1.0),
)
KIND_NAMES = tuple(k.name for k in ARTIFACT_KINDS)
DONOR_KINDS = frozenset({"transplanted_patch", "fused_ghost"})  # kinds that can take content from a second image


# ----------------------------------------------------------------------------------------------
# Putting artifacts into images


def apply_artifact(image: np.ndarray, region: np.ndarray, kind: ArtifactKind, rng: np.random.Generator,
                   donor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """`image` with `kind` applied inside `region`, and the labelled mask; None if the change is invisible.

    The edit is computed on a crop around the region (fast, and local like a real defect) and pasted
    back with the hard region mask, so pixels outside the mask are bit-identical to the input.
    """
    rows, cols = bounding_box(region, 24, region.shape)
    crop, crop_region = image[rows, cols], region[rows, cols]
    kwargs = {"donor": donor[rows, cols]} if kind.name in DONOR_KINDS and donor is not None else {}
    edited = kind.apply(np.ascontiguousarray(crop), crop_region, rng, **kwargs)
    changed = np.abs(edited.astype(np.int16) - crop.astype(np.int16)).max(axis=2)
    if changed[crop_region].mean() < MIN_VISIBLE_CHANGE:
        return None
    result = image.copy()
    result[rows, cols] = np.where(crop_region[..., None], edited, crop)
    # The label is the region less the areas that came out identical (a flat sky inpainted as flat
    # sky); single unchanged pixels amid changed ones stay labelled, as an annotator would draw it.
    near_change = cv2.dilate((changed > 0).astype(np.uint8), np.ones((LABEL_GAP, LABEL_GAP), np.uint8)) > 0
    mask = np.zeros_like(region)
    mask[rows, cols] = crop_region & near_change
    return result, mask


def sample_area_fraction(rng: np.random.Generator, low: float = 0.001, high: float = 0.12) -> float:
    """Log-uniform between 0.1% and 12% of the image per region: small defects are the common case."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def synthesize(image: np.ndarray, rng: np.random.Generator, max_regions: int = 4, max_total: float = 0.3,
               donor: np.ndarray | None = None, kinds: tuple[ArtifactKind, ...] = ARTIFACT_KINDS,
               detail_share: float = 0.5) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Puts 1..max_regions artifacts into `image`; returns (image, mask, kind names used).

    A `detail_share` of the blobs is centred on detailed parts of the picture (`detailed_point`),
    the rest anywhere.

    The total labelled area stays below `max_total`. May return fewer regions than drawn (or none)
    when every drawn edit was invisible; the caller decides what to do with an empty result.
    """
    h, w = image.shape[:2]
    weights = np.array([k.weight for k in kinds])
    result, mask, used = image.copy(), np.zeros((h, w), bool), []
    for _ in range(int(rng.integers(1, max_regions + 1))):
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        for _attempt in range(3):
            if kind.region == "stroke":
                region = random_stroke_region((h, w), rng)
            else:
                center = detailed_point(image, rng) if rng.random() < detail_share else None
                region = random_region((h, w), sample_area_fraction(rng), rng, center)
            region &= ~mask  # regions do not overlap, so each label pixel has one cause
            if region.sum() < 16 or (mask | region).mean() > max_total:
                continue
            edited = apply_artifact(result, region, kind, rng, donor)
            if edited is not None:
                result, new_mask = edited
                mask |= new_mask
                used.append(kind.name)
                break
    return result, mask, used
