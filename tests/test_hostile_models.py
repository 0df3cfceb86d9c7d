"""Model files that read without error but hold garbage, and images that cannot be scored (issue 25, part 1).

Each is refused when installed and when loaded, with a sentence that names what is wrong; no NaN is
ever reported as a score, and the JSON a command prints is always valid JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from pal_core import load_detector
from pal_core.cli import main
from pal_core.detect.detector import Detector, DetectorInfo, NonFiniteOutputError
from pal_core.hub.checkpoint import CheckpointError
from pal_core.hub.loading import read_checkpoint
from pal_core.refinement.inpainters import make_inpainter
from pal_core.refinement.refine import refine


def rewrite(source: str, target: Path, tensors=None, metadata=None) -> Path:
    """A copy of a detector file with some tensors or metadata values replaced."""
    with safe_open(source, framework="pt") as f:
        all_tensors = {k: f.get_tensor(k) for k in f.keys()}
        all_metadata = dict(f.metadata())
    all_tensors.update(tensors or {})
    all_metadata.update(metadata or {})
    save_file(all_tensors, str(target), metadata=all_metadata)
    return target


def classifier(source: str) -> torch.Tensor:
    with safe_open(source, framework="pt") as f:
        return f.get_tensor("decode_head.classifier.weight")


def nan_classifier(source: str, target: Path) -> Path:
    weight = classifier(source).clone()
    weight[0, 0] = float("nan")
    return rewrite(source, target, {"decode_head.classifier.weight": weight})


def picture(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


def model_args(model) -> list[str]:
    return ["--model", str(model), "--device", "cpu", "--input-size", "64"]


def preprocess(**values) -> str:
    return json.dumps({"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375], "input_size": 64, **values})


# ------------------------------------------------------------------------ garbage weights


def test_nan_classifier_weights_are_refused_by_load_and_detect(tmp_path, capsys, tiny_detector_file):
    broken = nan_classifier(tiny_detector_file, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="decode_head.classifier.weight' holds 1 NaN or infinite"):
        load_detector(broken, device="cpu")
    assert main(["detect", str(picture(tmp_path / "a.png")), *model_args(broken)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "NaN or infinite values" in err and "every image as clean" in err
    assert "Traceback" not in err


def test_nan_weights_are_not_installed(tmp_path, capsys, tiny_detector_file):
    broken = nan_classifier(tiny_detector_file, tmp_path / "nan.safetensors")
    models = tmp_path / "models"
    assert main(["models", "add", str(broken), "--name", "mine", "--dir", str(models)]) == 2
    assert "NaN or infinite values" in capsys.readouterr().err
    assert not (models / "mine.safetensors").exists()


def test_nan_weights_are_no_distillation_teacher(tmp_path, capsys, tiny_detector_file):
    broken = nan_classifier(tiny_detector_file, tmp_path / "nan.safetensors")
    images = tmp_path / "imgs"
    images.mkdir()
    picture(images / "a.png")
    code = main(["distill", "--images", str(images), "--teacher", str(broken), "--out", str(tmp_path / "student.safetensors"), "--device", "cpu",
                 "--steps", "1", "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "NaN or infinite values" in err and "Traceback" not in err
    assert not (tmp_path / "student.safetensors").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("dtype, name", [(torch.int64, "int64"), (torch.bool, "bool")])
def test_integer_and_bool_weights_are_refused(tmp_path, tiny_detector_file, dtype, name):
    weight = classifier(tiny_detector_file).to(dtype)
    broken = rewrite(tiny_detector_file, tmp_path / f"{name}.safetensors", {"decode_head.classifier.weight": weight})
    with pytest.raises(CheckpointError, match=f"'decode_head.classifier.weight' holds {name} values, not floating"):
        read_checkpoint(broken)


@pytest.mark.parametrize("values, message", [
    ({"std": [58.4, 0.0, 57.4]}, "std must be positive"),
    ({"mean": [float("nan"), 116.28, 103.53]}, "mean must be three finite numbers"),
    ({"std": [1.0, 2.0]}, "std must be three finite numbers"),
    ({"input_size": 10_000_000}, "input_size must be a whole number of pixels from 32 to 8192"),
    ({"input_size": 4}, "input_size must be a whole number"),
])
def test_unusable_preprocessing_is_refused(tmp_path, tiny_detector_file, values, message):
    broken = rewrite(tiny_detector_file, tmp_path / "pre.safetensors", metadata={"pal.preprocess": preprocess(**values)})
    with pytest.raises(CheckpointError, match=message):
        load_detector(broken, device="cpu")


def test_a_huge_config_is_refused_before_the_network_is_built(tmp_path, tiny_detector_file, monkeypatch):
    with safe_open(tiny_detector_file, framework="pt") as f:
        config = json.loads(f.metadata()["pal.config"])
    built = []
    monkeypatch.setattr("pal_core.hub.checkpoint.build_model", lambda *a: built.append(a))
    for key, value in [("embed_dim", 1_000_000), ("depths", [2] * 1000), ("num_heads", [1, [2], 4, 8])]:
        broken = rewrite(tiny_detector_file, tmp_path / "big.safetensors",
                         metadata={"pal.config": json.dumps({**config, key: value})})
        with pytest.raises(CheckpointError, match=f"asks for an unusable network: {key}"):
            read_checkpoint(broken)
    assert built == []


@pytest.mark.parametrize("key", ["pal.config", "pal.preprocess", "pal.extra"])
def test_deeply_nested_metadata_is_a_sentence(tmp_path, capsys, tiny_detector_file, key):
    broken = rewrite(tiny_detector_file, tmp_path / "deep.safetensors", metadata={key: "[" * 100_000 + "]" * 100_000})
    with pytest.raises(CheckpointError, match=f"metadata '{key}' is nested too deeply"):
        read_checkpoint(broken)
    assert main(["detect", str(picture(tmp_path / "a.png")), *model_args(broken)]) == 2
    assert "nested too deeply" in capsys.readouterr().err


def test_an_mmseg_checkpoint_holding_a_string_is_refused(tmp_path, capsys):
    path = tmp_path / "strange.pth"
    torch.save({"state_dict": {"backbone.patch_embed.projection.weight": "not a tensor",
                               "decode_head.conv_seg.weight": torch.zeros(2, 4, 1, 1)}}, path)
    with pytest.raises(CheckpointError, match="'backbone.patch_embed.projection.weight' is a str, not a tensor"):
        read_checkpoint(path)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) != 0
    err = capsys.readouterr().err
    assert "is a str, not a tensor" in err and "Traceback" not in err


def test_a_good_model_still_loads(tiny_detector_file):
    detector = load_detector(tiny_detector_file, device="cpu", input_size=64)
    assert detector.predict(torch.rand(1, 20, 20, 3)).isfinite().all()


# ------------------------------------------------------------------------ non-finite probabilities


class NaNNetwork(nn.Module):
    """Logits that overflow to NaN for any input, as a broken or overflowing network gives."""

    architecture = "test"

    def forward(self, x):
        return torch.full((x.shape[0], 2, 8, 8), float("nan"))


def test_a_nan_probability_from_a_finite_image_is_an_error_not_par_zero():
    detector = Detector(NaNNetwork(), DetectorInfo("nan-net", "test", "safetensors", "test"))
    images = torch.rand(2, 16, 16, 3)
    with pytest.raises(NonFiniteOutputError, match="nan-net gave NaN or infinite probabilities for image 0"):
        detector.par(images)
    with pytest.raises(NonFiniteOutputError, match="check or replace the model file"):
        detector.predict(images)


def nan_tiff(path: Path) -> Path:
    values = np.random.default_rng(0).random((24, 32), dtype=np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values, mode="F").save(path)
    return path


def test_detect_on_a_nan_float_tiff_is_an_error_with_valid_json(tmp_path, capsys, tiny_detector_file):
    good, bad = picture(tmp_path / "good.png"), nan_tiff(tmp_path / "bad.tif")
    assert main(["detect", str(good), str(bad), *model_args(tiny_detector_file)]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON output")) for line in out.splitlines()]
    assert [("par" in r, "error" in r) for r in records] == [(True, False), (False, True)]
    assert "NaN or infinite pixels" in records[1]["error"] and "bad.tif" in err and "Traceback" not in err


def test_fix_on_a_nan_float_tiff_fails_and_writes_nothing_for_it(tmp_path, capsys, tiny_detector_file):
    bad = nan_tiff(tmp_path / "bad.tif")
    out = tmp_path / "out"
    assert main(["fix", str(bad), "--out", str(out), *model_args(tiny_detector_file), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "NaN or infinite pixels" in err and "nothing was detected or repainted" in err
    assert not (out / "bad.png").exists() and not (out / "bad.json").exists()


def test_refine_refuses_a_nan_pixel_instead_of_finding_no_region(tiny_detector_file):
    detector = load_detector(tiny_detector_file, device="cpu", input_size=64)
    images = torch.rand(2, 24, 24, 3)
    images[1, 2, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="image 1 of the batch has NaN or infinite pixels"):
        refine(images, detector, make_inpainter("opencv-telea"))
    assert not math.isnan(float(images[0].sum()))


def test_auto_fix_node_on_a_nan_pixel_is_an_error_not_no_region(tiny_detector_file):
    from pal_nodes.inpainting import PALLoadOpenCVInpainter
    from pal_nodes.refinement import PALAutoFixV2
    detector = load_detector(tiny_detector_file, device="cpu", input_size=64)
    (inpainter,) = PALLoadOpenCVInpainter().load("telea", 0.0)
    images = torch.rand(1, 32, 40, 3)
    images[0, 5, 6, 2] = float("nan")
    with pytest.raises(ValueError, match="the image has NaN or infinite pixels, so nothing was detected or repainted"):
        PALAutoFixV2().fix(images, detector, inpainter, 0, 0.5, 1.5, 64, 0.06, False, True)


def overflowing_model(source: str, target: Path) -> Path:
    """Finite weights whose logits overflow: the probabilities come out NaN at run time, not at load."""
    return rewrite(source, target, {"decode_head.classifier.weight": torch.full_like(classifier(source), 3e38)})


def test_probabilities_that_overflow_stop_rank_and_detect_with_a_sentence(tmp_path, capsys, tiny_detector_file):
    model = overflowing_model(tiny_detector_file, tmp_path / "overflow.safetensors")
    image = picture(tmp_path / "a.png")
    out = tmp_path / "scores.jsonl"
    assert main(["rank", str(image), "--out", str(out), *model_args(model), "--precision", "fp32", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "gave NaN or infinite probabilities for image 0 at fp32" in err and "Traceback" not in err
    assert not out.exists() or "NaN" not in out.read_text()
    assert main(["detect", str(image), *model_args(model), "--precision", "fp32"]) == 1
    captured = capsys.readouterr()
    record = json.loads(captured.out, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))
    assert "par" not in record and "check or replace the model file" in record["error"]
