"""Detector.predict / mask / par: layouts, sizes, batching, preprocessing and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core import load_detector
from pal_core.detect.detector import artifact_probability
from pal_core.detect.preprocess import Preprocess


@pytest.fixture(scope="module")
def detector(tiny_detector_file):
    return load_detector(tiny_detector_file, device="cpu", dtype="fp32")


def test_predict_returns_probabilities_at_each_image_size(detector):
    images = torch.rand(2, 90, 140, 3)
    prob = detector.predict(images)
    assert prob.shape == (2, 90, 140) and prob.dtype == torch.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert prob.std() > 0  # a random network still gives a varied map


def test_batch_equals_one_by_one_and_lists_of_mixed_sizes(detector):
    images = torch.rand(3, 64, 96, 3)
    together = detector.predict(images)
    for i in range(3):
        assert torch.allclose(detector.predict(images[i:i + 1])[0], together[i], atol=1e-5)
    mixed = [torch.rand(50, 70, 3), images[1], torch.rand(33, 47, 3)]
    out = detector.predict(mixed)
    assert isinstance(out, list) and [tuple(o.shape) for o in out] == [(50, 70), (64, 96), (33, 47)]
    assert torch.allclose(out[1], together[1], atol=1e-5)


def test_native_size_groups_equal_sizes(detector):
    native = detector.with_input_size(None)
    assert native.model is detector.model  # shares the loaded weights
    a, b = torch.rand(40, 56, 3), torch.rand(72, 30, 3)
    out = native.predict([a, b, a])
    assert [tuple(o.shape) for o in out] == [(40, 56), (72, 30), (40, 56)]
    assert torch.allclose(out[0], out[2], atol=1e-6)
    # native differs from the 512 resize: it really runs at another resolution
    assert not torch.allclose(out[0], detector.predict([a])[0], atol=1e-3)


def test_mask_and_par_agree(detector):
    images = torch.rand(2, 32, 48, 3)
    prob = detector.predict(images)
    mask = detector.mask(images, threshold=0.5)
    assert mask.dtype == torch.bool and torch.equal(mask, prob > 0.5)
    par = detector.par(images)
    assert torch.allclose(par, mask.flatten(1).float().mean(1))
    assert detector.par([images[0], images[1][:20]]).shape == (2,)
    assert torch.all(detector.par(images, threshold=0.999) <= par)


def test_channels_and_dtypes_accepted(detector):
    rgb = torch.rand(40, 40, 3)
    grey = rgb[..., :1]
    assert torch.allclose(detector.predict([grey])[0], detector.predict([grey.expand(-1, -1, 3)])[0])
    rgba = torch.cat([rgb, torch.rand(40, 40, 1)], dim=-1)
    assert torch.allclose(detector.predict([rgba])[0], detector.predict([rgb])[0])  # alpha ignored
    as_uint8 = (rgb * 255).round().to(torch.uint8)
    assert torch.allclose(detector.predict([as_uint8])[0], detector.predict([rgb])[0], atol=1e-6)
    assert detector.predict(rgb).shape == (1, 40, 40)  # a single [H, W, 3] image
    assert detector.predict(torch.zeros(0, 8, 8, 3)).shape == (0, 8, 8)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 3, 32, 32), "channels-last"),
    (torch.rand(32, 32), "expected \\[B, H, W, 3\\]"),
    ([torch.rand(8, 8, 3), "x"], "image 1 is a str"),
    (torch.randint(0, 4, (1, 8, 8, 3)), "dtype torch.int64"),
    (torch.rand(1, 0, 8, 3), "empty"),
])
def test_bad_images_get_clear_errors(detector, bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        detector.predict(bad)


def test_bad_settings_get_clear_errors(tiny_detector_file, detector):
    with pytest.raises(ValueError, match="float16 is not supported on the CPU"):
        load_detector(tiny_detector_file, device="cpu", dtype="fp16")
    with pytest.raises(ValueError, match="unknown precision"):
        load_detector(tiny_detector_file, device="cpu", dtype="fp8")
    with pytest.raises(ValueError, match="input_size"):
        load_detector(tiny_detector_file, device="cpu", input_size=8)
    with pytest.raises(ValueError, match="threshold"):
        detector.mask(torch.rand(1, 8, 8, 3), threshold=1.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            load_detector(tiny_detector_file, device="cuda")


def test_bfloat16_runs_close_to_float32(tiny_detector_file):
    images = torch.rand(1, 64, 64, 3)
    fp32 = load_detector(tiny_detector_file, device="cpu", dtype="fp32").predict(images)
    bf16 = load_detector(tiny_detector_file, device="cpu", dtype="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert (bf16.predict(images) - fp32).abs().mean() < 0.05


def test_loaded_network_is_reused(tiny_detector_file):
    first = load_detector(tiny_detector_file, device="cpu")
    second = load_detector(tiny_detector_file, device="cpu", input_size=None)
    assert first.model is second.model


@pytest.mark.parametrize("height, width", [(200, 300), (900, 700), (700, 900), (512, 600), (64, 64)])
def test_preprocess_matches_pil_bicubic_resize(height, width):
    """The official script resizes 8-bit RGB with PIL's bicubic filter; ours gives the same pixels."""
    rng = np.random.default_rng(height * width)
    base = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    natural = np.asarray(Image.fromarray(base).resize((width, height), Image.BILINEAR))
    for source in (natural, rng.integers(0, 256, (height, width, 3), dtype=np.uint8)):
        expected = np.asarray(Image.fromarray(source).resize((512, 512), Image.BICUBIC)).astype(np.float32)
        image = torch.from_numpy(source.astype(np.float32) / 255.0).unsqueeze(0)
        ours = Preprocess(input_size=512)(image)[0].permute(1, 2, 0).numpy()
        ours_255 = np.round(ours * np.array(Preprocess().std) + np.array(Preprocess().mean))
        diff = np.abs(ours_255 - expected)
        assert diff.max() <= 1.0 and (diff > 0).mean() < 1e-3


def test_two_class_probability_is_softmax_after_resize():
    logits = torch.randn(2, 2, 8, 12)
    expected = torch.softmax(torch.nn.functional.interpolate(logits, size=(30, 50), mode="bilinear",
                                                             align_corners=False), dim=1)[:, 1]
    assert torch.allclose(artifact_probability(logits, (30, 50)), expected, atol=1e-6)


def test_weights_live_where_the_detector_says(tiny_detector_file):
    """Moved or recast behind its back (another user of the cached network), the detector puts its
    weights back before running; offload() parks them and the next run brings them back."""
    detector = load_detector(tiny_detector_file, device="cpu", dtype="fp32")
    images = torch.rand(1, 40, 40, 3)
    expected = detector.predict(images)
    detector.model.to(torch.float64)
    assert torch.equal(detector.predict(images), expected)
    assert next(detector.model.parameters()).dtype == torch.float32
    detector.offload("cpu")
    assert detector.weights_device() == torch.device("cpu") and torch.equal(detector.predict(images), expected)


def test_input_size_comes_from_the_model_file_unless_asked(tmp_path):
    """One home: the preprocessing saved with the model. load_detector's input_size overrides it."""
    from conftest import make_tiny_model

    from pal_core import DetectorCheckpoint, save_detector_file

    path = save_detector_file(DetectorCheckpoint(make_tiny_model(), "at256", Preprocess(input_size=256)),
                              tmp_path / "at256.safetensors")
    assert load_detector(path, device="cpu").input_size == 256
    assert load_detector(path, device="cpu", input_size=None).input_size is None
    assert load_detector(path, device="cpu", input_size=384).input_size == 384
    assert load_detector(path, device="cpu").input_size == 256  # the cached network's preprocessing is untouched


def test_compile_is_opt_in_and_wraps_the_shared_network(tiny_detector_file):
    plain = load_detector(tiny_detector_file, device="cpu", dtype="fp32")
    assert plain._network is plain.model and not plain.compiled
    compiled = load_detector(tiny_detector_file, device="cpu", dtype="fp32", compile=True)
    assert compiled.compiled and compiled.model is plain.model  # compiled lazily, on the first call
    assert isinstance(compiled._network, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.with_input_size(None).compiled
