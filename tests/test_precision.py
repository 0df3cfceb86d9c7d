"""precision="auto": what it picks on each kind of hardware, and that the lower precisions it picks keep
the masks of fp32 on real-size images with the shipped model."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core import load_detector
from pal_core.detect import devices
from pal_core.detect.detector import Detector, DetectorInfo, GuardLedger, PrecisionGuard
from pal_core.detect.preprocess import Preprocess
from pal_core.train.artifacts import ARTIFACT_KINDS, synthesize

INPUTS = Path(__file__).resolve().parent.parent / "workflows" / "input"


def fake_cpu(monkeypatch, amx: bool, avx512_bf16: bool):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)


def fake_gpu(monkeypatch, capability: tuple[int, int]):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: capability[0] >= 8)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, True, torch.bfloat16),  # Sapphire Rapids and later
    (False, True, torch.bfloat16),  # Cooper Lake, Zen 4
    (False, False, torch.float32),  # everything older
])
def test_auto_on_the_cpu_follows_its_bf16_units(monkeypatch, amx, avx512_bf16, expected):
    fake_cpu(monkeypatch, amx, avx512_bf16)
    cpu = torch.device("cpu")
    assert devices.resolve_dtype("auto", cpu) == expected
    assert devices.resolve_dtype(None, cpu) == expected
    assert devices.resolve_dtype("fp32", cpu) == torch.float32  # asked for: always honoured
    assert devices.resolve_dtype("auto", cpu, low_precision=False) == torch.float32  # TorchScript


@pytest.mark.parametrize("capability, expected", [
    ((9, 0), torch.bfloat16),  # Hopper
    ((8, 6), torch.bfloat16),  # Ampere
    ((7, 5), torch.float16),  # Turing: fp16 tensor cores, no bf16
    ((7, 0), torch.float16),  # Volta
    ((6, 1), torch.float32),  # Pascal: fp16 at a fraction of fp32's speed
])
def test_auto_on_cuda_follows_the_gpu(monkeypatch, capability, expected):
    fake_gpu(monkeypatch, capability)
    cuda = torch.device("cuda", 0)
    assert devices.auto_dtype(cuda) == expected
    assert devices.resolve_dtype("auto", cuda, low_precision=False) == torch.float32
    assert devices.resolve_dtype("fp16", cuda) == torch.float16


def test_auto_elsewhere_is_fp32_and_bad_names_are_refused():
    assert devices.auto_dtype(torch.device("mps")) == torch.float32
    with pytest.raises(ValueError, match="unknown precision 'fp8'; use one of auto, fp32, fp16, bf16"):
        devices.resolve_dtype("fp8", torch.device("cpu"))


def test_detector_reports_the_precision_auto_chose(monkeypatch, tiny_detector_file):
    fake_cpu(monkeypatch, amx=False, avx512_bf16=False)
    assert load_detector(tiny_detector_file, device="cpu").precision == "fp32"
    fake_cpu(monkeypatch, amx=True, avx512_bf16=True)
    detector = load_detector(tiny_detector_file, device="cpu")  # Swin + UPerNet
    assert detector.precision == "bf16" and next(detector.model.parameters()).dtype == torch.bfloat16
    assert detector.guard == PrecisionGuard() and detector._float32 is not None  # auto: masks of fp32
    assert load_detector(tiny_detector_file, device="cpu", dtype="bf16").guard is None  # asked for: raw speed
    # the shipped PAL-lite loses mask agreement in bf16 (below): auto keeps it in fp32
    assert load_detector(device="cpu").precision == "fp32"
    assert load_detector(device="cpu", dtype="bf16").precision == "bf16"  # asked for: honoured


def test_swin_upernet_in_bf16_keeps_the_fp32_masks_on_the_mmseg_fixture():
    """The randomly initialised mmseg fixture model (window 12) on its 512x512 input. Its probabilities
    crowd around 0.5 (random weights: mean 0.60), where any rounding flips a pixel: unguarded bf16 keeps
    100% of the mask where fp32 is not within 0.1 of the threshold (78% of the pixels) but only 98.3% of
    all pixels (2.2% lie within 0.01 of 0.5); probabilities differ by up to 0.055 (AVX2 CPU; 0.047 with
    AMX). The guard finds 21.5% of the pixels within its band (0.1) of 0.5 and computes the image again
    in fp32: its mask is fp32's."""
    from test_mmseg_fidelity import FIXTURES, load_fixture

    _, _, tensors = load_fixture("swin_w12")
    image = tensors["s512.image"].float() / 255.0
    fp32 = load_detector(FIXTURES / "swin_w12.pth", device="cpu", dtype="fp32", input_size=None).predict(image)
    detector = load_detector(FIXTURES / "swin_w12.pth", device="cpu", dtype="bf16", input_size=None)
    assert detector.guard is None  # an explicit bf16 is raw speed
    bf16 = detector.predict(image)
    decided = (fp32 - 0.5).abs() > 0.1
    assert decided.float().mean() > 0.5
    assert ((fp32 > 0.5) == (bf16 > 0.5))[decided].float().mean() >= 0.999
    assert ((fp32 > 0.5) == (bf16 > 0.5)).float().mean() < 0.99
    assert float((fp32 - bf16).abs().max()) < PrecisionGuard().band

    detector = load_detector(FIXTURES / "swin_w12.pth", device="cpu", dtype="bf16", input_size=None,
                             guard=PrecisionGuard())
    assert torch.equal(detector.predict(image), fp32)
    assert detector.guard_counts.recomputed == 1 and 0.15 < detector.guard_counts.last_undecided[0] < 0.3


def real_size_images() -> list[torch.Tensor]:
    """The shipped example pictures at their own sizes (512x512, 768x768), and both with synthetic
    artifacts of every kind painted in, so the masks have real edges to disagree on."""
    images = []
    for path in sorted(INPUTS.glob("*.jpg")):
        with Image.open(path) as img:
            picture = np.asarray(img.convert("RGB")).copy()
        images.append(picture)
        for seed, kinds in enumerate((ARTIFACT_KINDS[:len(ARTIFACT_KINDS) // 2], ARTIFACT_KINDS[len(ARTIFACT_KINDS) // 2:])):
            edited, _, _ = synthesize(picture, np.random.default_rng(seed), 4, kinds=tuple(kinds))
            images.append(edited)
    return [torch.from_numpy(image).float().div(255) for image in images]


def test_the_shipped_model_in_bf16_misses_the_agreement_auto_requires_unless_guarded():
    """Why auto keeps PAL-lite in fp32. Measured, unguarded: 99.80% of mask pixels equal over 9 images
    (3.3 M pixels), max probability difference 0.52 (far outside the guard's band, which was measured
    for Swin-B: on one picture 0.5% of the pixels flip more than 0.1 from the threshold). The guard
    sends back the 7 pictures with artifacts (0.21-1.55% of their pixels lie within its band, 0.1, of
    0.5; the 2 clean ones: 0.06%, 0%): 99.9991% equal, at least 99.988% in every picture, at the price of a bf16
    and an fp32 forward for most pictures, so bf16 does not pay for this model."""
    images = real_size_images()
    fp32 = load_detector(device="cpu", dtype="fp32").predict(images)
    detector = load_detector(device="cpu", dtype="bf16")
    bf16 = detector.predict(images)
    equal = sum(int(((a > 0.5) == (b > 0.5)).sum()) for a, b in zip(fp32, bf16))
    total = sum(a.numel() for a in fp32)
    artifacts = sum(int((a > 0.5).sum()) for a in fp32)
    assert artifacts > 0.02 * total  # the masks have something to agree on
    assert 0.99 < equal / total < 0.999, equal / total

    # no cost bound: every image is tried in bf16, to see what the check alone does
    detector = load_detector(device="cpu", dtype="bf16", guard=PrecisionGuard(budget=float("inf")))
    guarded = detector.predict(images)
    agreement = [float(((a > 0.5) == (b > 0.5)).float().mean()) for a, b in zip(fp32, guarded)]
    assert (detector.guard_counts.checked, detector.guard_counts.recomputed) == (9, 7)
    assert sum(a * f.numel() for a, f in zip(agreement, fp32)) / total > 0.99999
    assert min(agreement) > 0.9998  # per picture, above the 99.9% the guard promises within its band
    assert sum(torch.equal(a, b) for a, b in zip(fp32, guarded)) == 7


def test_the_guard_sends_images_undecided_at_the_threshold_back_to_fp32(tiny_detector_file):
    """The tiny random Swin + UPerNet gives probabilities 0.51-0.59 and bf16 moves them by up to ~1e-3.
    At threshold 0.55, inside that crowd, unguarded bf16 flips 0.6% of the mask pixels; the guard finds all
    the pixels within its band and returns fp32's maps exactly. At 0.3 nothing is near: it keeps bf16's."""
    images = torch.rand(2, 96, 128, 3, generator=torch.Generator().manual_seed(0))
    fp32 = load_detector(tiny_detector_file, device="cpu", dtype="fp32", input_size=64).predict(images)
    guarded = load_detector(tiny_detector_file, device="cpu", dtype="bf16", input_size=64,
                            guard=PrecisionGuard(budget=float("inf")))  # no cost bound: every image is tried
    unguarded = load_detector(tiny_detector_file, device="cpu", dtype="bf16", input_size=64)
    assert 0.5 < float(fp32.min()) and float(fp32.max()) < 0.6

    raw = unguarded.predict(images, threshold=0.55)
    assert 0 < float((fp32 - raw).abs().max()) < 0.005
    assert float(((fp32 > 0.55) == (raw > 0.55)).float().mean()) < 0.999  # unguarded bf16 breaks agreement
    assert unguarded.guard_counts.checked == 0

    assert torch.equal(guarded.predict(images, threshold=0.55), fp32)  # both recomputed: fp32 exactly
    assert guarded.last_precisions == ["fp32", "fp32"]
    counts = guarded.guard_counts
    assert (counts.checked, counts.recomputed) == (2, 2)
    assert min(counts.last_undecided) > 0.99  # the whole map lies within 0.1 of 0.55

    kept = guarded.predict(images, threshold=0.3)  # every pixel is 0.2 above the threshold: bf16 stands
    assert torch.equal(kept, raw) and not torch.equal(kept, fp32) and guarded.last_precisions == ["bf16", "bf16"]
    assert torch.equal(guarded.mask(images, 0.3), fp32 > 0.3)
    assert (counts.checked, counts.recomputed, counts.last_undecided) == (6, 2, [0.0, 0.0])  # predict, mask


def test_the_guard_keeps_one_float32_copy_and_none_for_a_model_already_cast(tiny_detector_file):
    first = load_detector(tiny_detector_file, device="cpu", dtype="bf16", guard=PrecisionGuard())
    again = load_detector(tiny_detector_file, device="cpu", dtype="bf16", guard=PrecisionGuard())  # cached, cast
    unguarded = load_detector(tiny_detector_file, device="cpu", dtype="bf16")
    assert unguarded.model is not first.model and unguarded._float32 is None  # no copy, never shared
    assert first.model is again.model and next(first.model.parameters()).dtype == torch.bfloat16
    assert first._float32 is again._float32 is first.with_input_size(256)._float32
    assert all(t.dtype == torch.float32 for t in first._float32.parameters())
    assert load_detector(tiny_detector_file, device="cpu", dtype="fp32")._float32 is None  # nothing to guard
    cast = Detector(copy.deepcopy(first.model), first.info, dtype=torch.bfloat16)  # handed over in bf16
    assert cast._float32 is None and cast.predict(torch.rand(1, 64, 64, 3), threshold=0.55).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="PrecisionGuard needs 0 < band < 1"):
        PrecisionGuard(band=0)


class ForwardCounter:
    """Counts the images each network of a guarded detector runs, and the size of each batch it receives."""

    def __init__(self, detector: Detector):
        self.reduced = self.float32 = 0
        self.reduced_batches: list[int] = []
        detector.model.register_forward_hook(lambda module, args, out: self._add("reduced", args[0]))
        detector._float32.register_forward_hook(lambda module, args, out: self._add("float32", args[0]))

    def _add(self, which: str, x: torch.Tensor) -> None:
        setattr(self, which, getattr(self, which) + x.shape[0])
        if which == "reduced":
            self.reduced_batches.append(x.shape[0])


def guarded_detector(guard: PrecisionGuard, batch_size: int = 1) -> Detector:
    """The tiny random Swin + UPerNet in bf16 with `guard`, at 64x64 (a fresh network: hooks stay on it)."""
    from conftest import make_tiny_model

    info = DetectorInfo("tiny", "random test model", "in-memory", "swin_upernet")
    return Detector(make_tiny_model(), info, Preprocess(input_size=64), dtype=torch.bfloat16, batch_size=batch_size,
                    guard=guard)


def test_the_guard_cost_stays_within_its_budget_when_every_image_goes_back(tiny_detector_file):
    """At threshold 0.55 every map of the tiny model is undecided, so every image tried in bf16 is computed
    again: the worst case. With a bf16 forward costing half a float32 one and a 10% budget, image k may be
    tried only while 0.5 * (failures + 1) <= 0.1 * k + 0.5: images 1, 5, 10, ..., 40, 9 of 40. The run then
    costs 40 float32 forwards plus 9 halves, exactly the bound 1.1 * 40 + 0.5; without the ledger it
    would cost 40 * 1.5."""
    guard = PrecisionGuard(budget=0.1, cost_ratio=0.5)
    detector = guarded_detector(guard)
    counter = ForwardCounter(detector)
    images = torch.rand(40, 48, 48, 3, generator=torch.Generator().manual_seed(1))
    precisions = []
    for image in images:  # one call per image, as `pal detect` does: the ledger lasts the detector's life
        detector.predict(image[None], threshold=0.55)
        precisions += detector.last_precisions
    ledger = detector.guard_counts
    assert (counter.reduced, counter.float32) == (9, 40)
    assert (ledger.images, ledger.checked, ledger.recomputed, ledger.direct) == (40, 9, 9, 31)
    assert 0.5 * counter.reduced + counter.float32 <= 1.1 * 40 + 0.5
    assert precisions == ["fp32"] * 40  # every map is fp32's: recomputed or run directly
    assert ledger.extra_cost(guard) == pytest.approx(4.5)


def test_the_guard_ramps_up_to_whole_batches_when_images_pass(tiny_detector_file):
    """At threshold 0.3 every bf16 map is decided. Within the first batch of 8 the ledger lets a first try
    take only 2 images (nothing saved yet: 0.1 * 8 + 0.5 allows 2 halves), the next 4 (2 images saved 0.5
    each: 0.8 + 0.5 + 1.0), the last 2; then whole batches: all 40 images in bf16 (before tries were
    split, the 6 the first try left over ran in float32)."""
    guard = PrecisionGuard(budget=0.1, cost_ratio=0.5)
    detector = guarded_detector(guard, batch_size=8)
    counter = ForwardCounter(detector)
    images = torch.rand(40, 48, 48, 3, generator=torch.Generator().manual_seed(2))
    probs = detector.predict(images, threshold=0.3)
    ledger = detector.guard_counts
    assert (counter.reduced, counter.float32) == (40, 0)
    assert counter.reduced_batches == [2, 4, 2, 8, 8, 8, 8]
    assert (ledger.checked, ledger.recomputed, ledger.direct, ledger.error.images) == (40, 0, 0, 0)
    assert detector.last_precisions == ["bf16"] * 40
    assert ledger.extra_cost(guard) == pytest.approx(-20.0)
    fp32 = load_detector(tiny_detector_file, device="cpu", dtype="fp32", input_size=64).predict(images)
    assert torch.equal(probs > 0.3, fp32 > 0.3)


def test_the_guard_measures_the_error_on_an_image_it_sends_back_and_judges_later_ones_by_it():
    """At threshold 0.45 every probability of the tiny model (0.51-0.59) lies within the starting band,
    0.1: the first image goes back to float32, and its two maps measure bf16's error on this network
    (~1e-3 in probability). Taken 3x, that error cannot carry any pixel of the following images across
    the threshold (0.06 away at least): they keep bf16's maps, whose masks equal float32's. The first
    image would have passed too, so the ledger allows a second try at once (cost ratio 0.5, budget 0.05:
    0.1 + 2 * 0.5 - 0.5 >= 0.5; with one probe the next 9 images would have run in float32 directly)."""
    images = torch.rand(6, 48, 48, 3, generator=torch.Generator().manual_seed(3))
    guard = PrecisionGuard(budget=0.05, cost_ratio=0.5)
    detector = guarded_detector(guard)
    # the guarded detector's own two networks, run unguarded, one image at a time as below
    fp32 = [Detector(detector._float32, detector.info, detector.preprocess).predict(image[None])[0] for image in images]
    unguarded = Detector(detector.model, detector.info, detector.preprocess, dtype=torch.bfloat16)
    bf16 = [unguarded.predict(image[None])[0] for image in images]
    precisions, maps = [], []
    for image in images:  # one call per image, as `pal detect` does
        maps.append(detector.predict(image[None], threshold=0.45)[0])
        precisions += detector.last_precisions
    ledger = detector.guard_counts
    assert precisions == ["fp32"] + ["bf16"] * 5
    assert (ledger.checked, ledger.recomputed, ledger.direct, ledger.error.images, ledger.probes) == (6, 1, 0, 1, 2)
    assert ledger.error.largest == pytest.approx(float((bf16[0] - fp32[0]).abs().max()))
    assert 0 < ledger.error.largest < 0.003 and ledger.error.logit_errors.numel() == 48 * 48
    assert ledger.last_undecided == [0.0]  # the last image: no pixel can flip
    assert torch.equal(maps[0], fp32[0]) and all(torch.equal(m, b) for m, b in zip(maps[1:], bf16[1:]))
    assert all(torch.equal(m > 0.45, f > 0.45) for m, f in zip(maps, fp32))
    assert ledger.summary(guard).endswith(
        f"; bf16's error measured on 1 image (largest probability difference {ledger.error.largest:.2g}), taken 3x")

    fixed = guarded_detector(PrecisionGuard(budget=float("inf"), margin=None))  # only the band, as before
    fixed_maps = fixed.predict(images, threshold=0.45)
    assert all(torch.equal(m > 0.45, f > 0.45) for m, f in zip(fixed_maps, fp32))
    assert fixed.last_precisions == ["fp32"] * 6
    assert fixed.guard_counts.summary(fixed.guard).endswith("; pixels within 0.1 of the threshold counted as undecided")


def test_the_measured_error_predicts_how_many_mask_pixels_flip():
    """A map whose logits run evenly from -4 to 4, "computed" twice with rounding noise of known size
    (0.05 in logits): the error measured on the first copy predicts the flips of the second within 15%,
    and taking it 3x larger predicts about 3x as many (the distances are spread evenly)."""
    from pal_core.detect.guard import MeasuredError

    generator = torch.Generator().manual_seed(5)
    logits = torch.linspace(-4, 4, 256 * 256).reshape(256, 256)
    float32 = torch.sigmoid(logits)
    first, second = (torch.sigmoid(logits + 0.05 * torch.randn(256, 256, generator=generator)) for _ in range(2))
    error = MeasuredError()
    error.add(first, float32, threshold=0.5)
    assert error.images == 1 and error.largest == pytest.approx(float((first - float32).abs().max()))
    assert error.logit_errors.numel() == int(((logits.abs() < 2)).sum())  # pixels near the threshold only
    flipped = float(((second > 0.5) != (float32 > 0.5)).float().mean())
    assert flipped > 5e-4  # enough flips to compare with
    assert error.flip_share(second, 0.5, margin=1.0) == pytest.approx(flipped, rel=0.15)
    assert 2.5 < error.flip_share(second, 0.5, margin=3.0) / error.flip_share(second, 0.5, margin=1.0) < 3.5
    assert error.flip_share(torch.full((8, 8), 0.99), 0.5, margin=3.0) == 0.0  # far from the threshold


def test_an_image_measured_with_no_pixel_near_the_threshold_leaves_the_band_in_charge():
    """Two maps far from the threshold give no error to judge by: the starting band goes on counting."""
    ledger, guard = GuardLedger(), PrecisionGuard()
    far = torch.full((16, 16), 0.999)
    ledger.compare(guard, far, far.clone(), threshold=0.5)
    assert ledger.error.images == 1 and ledger.error.logit_errors.numel() == 0
    assert ledger.flip_share(guard, torch.full((16, 16), 0.52), 0.5) == 1.0  # all within 0.1 of 0.5
    assert ledger.summary(guard).endswith("pixels within 0.1 of the threshold counted as undecided")


def test_a_measured_error_larger_than_assumed_makes_the_guard_stricter():
    """At threshold 0.3 the tiny model's maps (0.51-0.59) lie outside the starting band: kept in bf16. Once
    an error is measured, it decides: 3x it cannot reach the threshold (kept), 1000x it can (sent back)."""
    images = torch.rand(2, 48, 48, 3, generator=torch.Generator().manual_seed(4))
    for margin, kept in ((3.0, "bf16"), (1000.0, "fp32")):
        detector = guarded_detector(PrecisionGuard(budget=float("inf"), margin=margin))
        detector.predict(images[1:], threshold=0.3)
        assert detector.last_precisions == ["bf16"]
        detector.predict(images[:1], threshold=0.55)  # undecided: measures the error
        assert detector.guard_counts.error.images == 1
        detector.predict(images[1:], threshold=0.3)
        assert detector.last_precisions == [kept]
    with pytest.raises(ValueError, match="margin >= 1"):
        PrecisionGuard(margin=0.5)


def test_the_ledger_measures_the_cost_ratio_and_stops_a_precision_slower_than_fp32():
    ledger, guard = GuardLedger(), PrecisionGuard(budget=0.05)
    assert ledger.cost_ratio(guard) == 1.0  # nothing timed yet: a reduced forward is assumed as dear as fp32
    assert ledger.reduced_share(guard, 8) == 1  # 0.05 * 8 + 1 allows one image to fail
    ledger.time("bf16", 2.0, 4)
    ledger.time("fp32", 4.0, 4)
    assert ledger.cost_ratio(guard) == pytest.approx(0.5)
    assert ledger.reduced_share(guard, 8) == 1 + int(0.05 * 8 / 0.5)
    ledger.record(tried=8, recomputed=0, direct=0)  # 8 kept: 4 float32 forwards saved
    assert ledger.extra_cost(guard) == pytest.approx(-4.0) and ledger.reduced_share(guard, 8) == 8

    slow = GuardLedger()  # bf16 at twice fp32's time (a CPU without bf16 units): every kept image costs more
    slow.time("bf16", 8.0, 4)
    slow.time("fp32", 4.0, 4)
    for _ in range(15):
        tried = slow.reduced_share(guard, 1)
        slow.record(tried=tried, recomputed=0, direct=1 - tried)
    assert slow.checked == 1 and slow.direct == 14  # one try, then fp32 until the budget has grown
    assert slow.extra_cost(guard) <= guard.budget * slow.images + 2.0
    assert PrecisionGuard(cost_ratio=0.5, budget=float("inf")) and GuardLedger().reduced_share(
        PrecisionGuard(budget=float("inf")), 8) == 8
    with pytest.raises(ValueError, match="budget >= 0 and cost_ratio > 0"):
        PrecisionGuard(cost_ratio=0)
