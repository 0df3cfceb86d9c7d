"""The precision guard: keeps the masks of a network run below float32 (bf16/fp16) those of float32,
image by image, at a bounded cost.

A pixel's mask can differ from float32's only if the rounding moves its probability across the
threshold. The guard estimates, for each image run below float32, the share of its pixels that can
flip; an image above `PrecisionGuard.share` (0.1%) is computed again in float32 (from a float32 copy of
the weights the Detector keeps) and the float32 map is returned. So each mask keeps at least 99.9% of
float32's pixels, as far as the estimate holds.

The estimate. Until the run knows the rounding error, every pixel within `band` (0.1) of the threshold
counts as one that can flip: a bound that holds while the error stays under 0.1 (Swin + UPerNet:
0.0008-0.055 depending on the weights), but a pessimistic one, since an artifact's mask edge alone puts
more than 0.1% of an image's pixels within 0.1 of the threshold. Every image sent back is computed in
both precisions, which measures the error on this network, these weights and this device for free
(`MeasuredError`). From then on the guard counts, for each pixel, the share of the measured errors large
enough to carry it across the threshold, with every error taken `margin` (3) times larger than measured.
Distances and errors are compared as logits (log-odds), in which a pixel's rounding error hardly depends
on how far from 0.5 the threshold lies. The promise is then an empirical one, not a bound: an image
whose error is several times the measured one can pass with more flips than `share` (a network's error
varied 8x between pictures in the benchmark, whose pictures all kept >= 99.93% of float32's mask pixels;
docs/benchmarks-precision.md). An error larger than assumed makes the guard stricter, not looser: it is
measured on every image sent back.

The cost. An image sent back costs a reduced forward on top of the float32 one, so a network whose maps
keep failing would run slower than float32 alone. `GuardLedger` bounds that: before each try it counts
what the run has cost so far against what float32 alone would have cost, and lets a try take only as
many images as can all fail without the run exceeding float32's cost by more than `budget` (5%) plus one
image's reduced forward (two when the first image sent back would have passed with the error it
measured: the second try is what that measurement buys); the rest run in float32 directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# Pixels whose float32 logit lies within this of the threshold's give the error sample: near the
# threshold is where flips happen (a sent-back image has at least 0.1% of its pixels within 0.1 there).
SAMPLE_LOGIT_RANGE = 2.0
SAMPLE_SIZE = 1 << 16  # errors kept (evenly thinned beyond that): enough for a 0.01% tail


@dataclass(frozen=True)
class PrecisionGuard:
    """When a map computed below float32 is computed again in float32, and what that may cost (see the
    module's docstring). `band`: before any error is measured, pixels within it of the threshold count as
    able to flip. `share`: the largest share of an image's pixels allowed to flip. `margin`: measured
    errors are taken this many times larger (None: never use them, keep counting within `band`).
    `budget`: what a run may cost beyond float32's, as a share of float32's cost. `cost_ratio`: a reduced
    forward's time over a float32 one's; None measures it in the run (each image sent back is timed in
    both precisions)."""

    band: float = 0.1
    share: float = 0.001
    budget: float = 0.05
    cost_ratio: float | None = None
    margin: float | None = 3.0

    def __post_init__(self):
        if not 0 < self.band < 1 or not 0 <= self.share < 1:
            raise ValueError(f"PrecisionGuard needs 0 < band < 1 and 0 <= share < 1, not {self.band}, {self.share}")
        if not self.budget >= 0 or (self.cost_ratio is not None and not self.cost_ratio > 0):
            raise ValueError(f"PrecisionGuard needs budget >= 0 and cost_ratio > 0 (or None: measured), not "
                             f"{self.budget}, {self.cost_ratio}")
        if self.margin is not None and not self.margin >= 1:
            raise ValueError(f"PrecisionGuard needs margin >= 1 (or None: the band alone), not {self.margin}")

    def undecided(self, probability: torch.Tensor, threshold: float) -> float:
        """Share of the pixels whose probability lies within `band` of `threshold` (the bound before any
        error is measured)."""
        return float(((probability - threshold).abs() < self.band).float().mean())


def logit(probability: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) in float32; probabilities within 1e-6 of 0 or 1 are saturated (far from any threshold)."""
    return torch.logit(probability.float().clamp(1e-6, 1 - 1e-6))


def logit_distance(probability: torch.Tensor, threshold: float) -> torch.Tensor:
    """|logit(p) - logit(threshold)| per pixel: how far the rounding must move a pixel to flip its mask."""
    return (logit(probability) - math.log(threshold / (1 - threshold))).abs()


@dataclass
class MeasuredError:
    """The rounding error of a network below float32, measured on images computed in both precisions:
    a sorted sample of logit(reduced) - logit(float32) at pixels near the threshold (signed: a pixel
    flips only if the error points back across the threshold, and rounding may lean one way), and the
    largest probability difference over all pixels (for reports)."""

    images: int = 0
    largest: float = 0.0
    logit_errors: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    def add(self, reduced: torch.Tensor, float32: torch.Tensor, threshold: float) -> None:
        reduced, float32 = reduced.float().cpu(), float32.float().cpu()
        self.largest = max(self.largest, float((reduced - float32).abs().max()))
        self.images += 1
        near = logit_distance(float32, threshold) < SAMPLE_LOGIT_RANGE
        errors = torch.cat([self.logit_errors, (logit(reduced[near]) - logit(float32[near])).flatten()]).sort().values
        if errors.numel() > SAMPLE_SIZE:  # thin evenly over the sorted values: the distribution stays
            errors = errors[torch.linspace(0, errors.numel() - 1, SAMPLE_SIZE).round().long()]
        self.logit_errors = errors

    def flip_share(self, reduced: torch.Tensor, threshold: float, margin: float) -> float:
        """Expected share of `reduced`'s pixels whose mask differs from float32's, with every error `margin`
        times the measured ones. A pixel whose reduced logit lies D above the threshold's came from below
        it if its error exceeds D; one D below, if its error is below -D: the mean over pixels of the
        share of measured errors that would have done it."""
        errors = self.logit_errors
        if not errors.numel():  # no pixel near the threshold measured: no error known to flip one
            return 0.0
        offset = (logit(reduced) - math.log(threshold / (1 - threshold))).flatten().cpu() / margin
        reach = float(errors.abs().max())
        above, below = offset[(offset > 0) & (offset < reach)], offset[(offset <= 0) & (offset > -reach)]
        flips = (errors.numel() - torch.searchsorted(errors, above.contiguous(), right=True)).sum()
        flips = flips + torch.searchsorted(errors, below.contiguous(), right=False).sum()
        return float(flips) / (errors.numel() * offset.numel())


@dataclass
class GuardLedger:
    """What the precision guard did in a Detector's run so far, the error it measured and the cost bound it keeps.

    Costs are counted in float32 image forwards. An image tried below float32 and kept costs r (the
    cost ratio), one sent back r + 1, one run in float32 directly 1; float32 alone would have cost 1
    each. So the run's extra cost over float32 is r * recomputed - (1 - r) * kept, and `reduced_share`
    lets a try take only as many images as keep it within budget * images + probes * r even if all of
    them are sent back: by induction the whole run never costs more than float32's by more than that.
    """

    images: int = 0  # images decided so far (tried below float32 or run in float32 directly)
    checked: int = 0  # tried below float32 and checked by the guard
    recomputed: int = 0  # of those, computed again in float32
    direct: int = 0  # run in float32 without a try, because the budget did not allow one
    reduced_seconds: float = 0.0  # time in reduced forwards and in float32 forwards, and their images
    reduced_timed: int = 0
    float32_seconds: float = 0.0
    float32_timed: int = 0
    error: MeasuredError = field(default_factory=MeasuredError)  # from the images sent back
    probes: int = 1  # reduced forwards the bound allows beyond its budget (see the module's docstring)
    # the latest `predict`'s images, in order (only that one: a long run keeps no list)
    last_undecided: list[float] = field(default_factory=list)  # share of each image's pixels able to flip
    last_precisions: list[str | None] = field(default_factory=list)  # what produced each map; None: not run

    def flip_share(self, guard: PrecisionGuard, reduced: torch.Tensor, threshold: float) -> float:
        """The share of `reduced`'s pixels that can flip: estimated from the measured error once there is
        one (and the guard has a margin), else those within the guard's band (also while the images
        measured had no pixel near the threshold, which gives no errors to judge by)."""
        if self.error.logit_errors.numel() and guard.margin is not None:
            return self.error.flip_share(reduced, threshold, guard.margin)
        return guard.undecided(reduced, threshold)

    def compare(self, guard: PrecisionGuard, reduced: torch.Tensor, float32: torch.Tensor, threshold: float) -> None:
        """Learns from an image computed in both precisions: the error, and, on the first, whether that
        error would have kept the reduced map (then one more try is worth its cost)."""
        self.error.add(reduced, float32, threshold)
        if self.error.images == 1 and self.flip_share(guard, reduced, threshold) <= guard.share:
            self.probes = 2

    def knows_cost_ratio(self, guard: PrecisionGuard) -> bool:
        """Whether the cost ratio is given or measured (else a reduced forward counts as dear as float32's)."""
        return guard.cost_ratio is not None or bool(self.reduced_timed and self.float32_timed)

    def cost_ratio(self, guard: PrecisionGuard) -> float:
        """The guard's, else the measured ratio of reduced to float32 seconds per image (1 until both are
        timed: a reduced forward is assumed to cost as much as a float32 one)."""
        if guard.cost_ratio is not None:
            return guard.cost_ratio
        if not self.knows_cost_ratio(guard) or self.float32_seconds <= 0:
            return 1.0
        return (self.reduced_seconds / self.reduced_timed) / (self.float32_seconds / self.float32_timed)

    def extra_cost(self, guard: PrecisionGuard) -> float:
        """The run's cost beyond float32's so far, in float32 image forwards (negative: saved)."""
        r = self.cost_ratio(guard)
        return r * self.recomputed - (1 - r) * (self.checked - self.recomputed)

    def reduced_share(self, guard: PrecisionGuard, batch: int) -> int:
        """How many of the next `batch` images may be tried below float32 (the first ones)."""
        r = self.cost_ratio(guard)
        allowed = guard.budget * (self.images + batch) + self.probes * r - self.extra_cost(guard)
        if allowed >= batch * r:  # also an infinite budget (no bound)
            return batch
        return max(0, int(allowed / r + 1e-9))

    def record(self, tried: int, recomputed: int, direct: int) -> None:
        self.images += tried + direct
        self.checked += tried
        self.recomputed += recomputed
        self.direct += direct

    def time(self, precision: str, seconds: float, images: int) -> None:
        if precision == "fp32":
            self.float32_seconds += seconds
            self.float32_timed += images
        else:
            self.reduced_seconds += seconds
            self.reduced_timed += images

    def summary(self, guard: PrecisionGuard | None = None, precision: str = "bf16") -> str:
        """One line for reports: how many images the guard computed again and ran directly in float32, and
        (given the guard) what it judged them by; `precision` names the reduced one."""
        line = (f"precision guard: {self.recomputed} of {self.checked} images computed again in fp32, "
                f"{self.direct} run in fp32 directly (cost bound)")
        if guard is None:
            return line
        if not self.error.logit_errors.numel() or guard.margin is None:
            return f"{line}; pixels within {guard.band:g} of the threshold counted as undecided"
        return (f"{line}; {precision}'s error measured on {self.error.images} "
                f"image{'s' if self.error.images != 1 else ''} (largest probability difference "
                f"{self.error.largest:.2g}), taken {guard.margin:g}x")
