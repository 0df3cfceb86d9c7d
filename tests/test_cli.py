"""`pal detect` and `pal convert`, run in-process as a user would run them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core import load_detector
from pal_core.cli import main
from pal_core.imageio import read_image

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg"


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder with the kinds of files users have: JPEG, RGBA PNG, 16-bit grey PNG, WebP, a corrupt one."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)).save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 65536, (30, 20), dtype=np.uint16)).save(folder / "sub" / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "sub" / "web.webp")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def run_cli(capsys, *argv) -> tuple[int, list[dict], str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, lines, captured.err


def test_detect_writes_outputs_and_reports_bad_files(capsys, images, tmp_path, tiny_detector_file):
    out = tmp_path / "out"
    code, records, err = run_cli(capsys, "detect", images, "--model", tiny_detector_file, "--out", out,
                                 "--device", "cpu")
    assert code == 1 and "broken.png" in err  # one unreadable file: reported, the rest processed
    by_name = {Path(r["image"]).name: r for r in records}
    assert set(by_name) == {"photo.jpg", "alpha.png", "deep16.png", "web.webp", "broken.png"}
    assert "error" in by_name["broken.png"]
    detector = load_detector(tiny_detector_file, device="cpu")  # the CLI's default precision: auto
    made = [r["precision"] for r in records if "error" not in r]
    precisions = set(made)
    if detector.guarded:
        # a CPU with bf16 units: every tiny-model map lies within the starting band (0.1) of 0.5, so the first
        # image runs again in fp32 and measures the error; the report counts what fp32 made
        guard = re.search(r"precision guard: (\d) of (\d) images computed again in fp32, (\d) run in fp32 "
                          r"directly \(cost bound\); bf16's error measured on \d images? \(largest probability "
                          r"difference [0-9.e-]+\), taken 3x", err)
        assert guard and int(guard[1]) >= 1 and int(guard[2]) + int(guard[3]) == len(made) == 4
        assert made.count("fp32") == int(guard[1]) + int(guard[3]) and precisions <= {"bf16", "fp32"}
    else:
        assert precisions == {detector.precision} and "precision guard" not in err
    for name, size in {"photo.jpg": (60, 80), "alpha.png": (40, 50), "deep16.png": (30, 20), "web.webp": (32, 32)}.items():
        record = by_name[name]
        assert (record["height"], record["width"]) == size
        stem = Path(name).stem
        mask = np.asarray(Image.open(out / f"{stem}.mask.png"))
        assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
        assert record["par"] == pytest.approx((mask == 255).mean(), abs=1e-6)
        expected = detector.par([read_image(Path(record["image"]))]).item()
        assert record["par"] == pytest.approx(expected, abs=1e-6)
        prob = np.asarray(Image.open(out / f"{stem}.prob.png"))
        assert prob.shape == size and prob.max() > prob.min()
        overlay = np.asarray(Image.open(out / f"{stem}.overlay.png"))
        assert overlay.shape == (*size, 3)


def test_overlay_tints_exactly_the_artifact_pixels(capsys, tmp_path, tiny_detector_file):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((48, 64, 3), 100, dtype=np.uint8)).save(path)
    code, _, _ = run_cli(capsys, "detect", path, "--model", tiny_detector_file, "--out", tmp_path / "o",
                         "--threshold", "0.3")
    assert code == 0
    mask = np.asarray(Image.open(tmp_path / "o" / "grey.mask.png")) == 255
    overlay = np.asarray(Image.open(tmp_path / "o" / "grey.overlay.png")).astype(int)
    assert (overlay[~mask] == 100).all()
    if mask.any():  # 30% towards magenta (255, 0, 255), as the official visualisation
        expected = np.array([100 * 0.7 + 255 * 0.3, 100 * 0.7, 100 * 0.7 + 255 * 0.3])
        assert (np.abs(overlay[mask] - expected) <= 0.5).all()


def test_detect_never_overwrites_without_the_flag(capsys, tmp_path, tiny_detector_file):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.prob.png").write_bytes(b"precious")
    code, records, err = run_cli(capsys, "detect", path, "--model", tiny_detector_file, "--out", out)
    assert code == 2 and "already exists" in err and records == []
    assert (out / "a.prob.png").read_bytes() == b"precious" and not (out / "a.mask.png").exists()
    code, records, _ = run_cli(capsys, "detect", path, "--model", tiny_detector_file, "--out", out, "--overwrite")
    assert code == 0 and (out / "a.prob.png").read_bytes() != b"precious"


def test_detect_refuses_two_inputs_with_one_stem(capsys, tmp_path, tiny_detector_file):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / folder / "same.png")
    code, _, err = run_cli(capsys, "detect", tmp_path / "x", tmp_path / "y", "--model", tiny_detector_file,
                           "--out", tmp_path / "out")
    assert code == 2 and "would write the same files" in err


def test_detect_without_a_model_explains(capsys, tmp_path, monkeypatch):
    from pal_core.hub import loading
    monkeypatch.setattr(loading, "DEFAULT_MODEL", "not_installed_model")
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)
    code, _, err = run_cli(capsys, "detect", path)
    assert code == 2 and "no default model is installed" in err and "--model" in err


def test_detect_native_size_and_missing_inputs(capsys, tmp_path, tiny_detector_file):
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 28, 3), dtype=np.uint8)).save(path)
    code, records, _ = run_cli(capsys, "detect", path, "--model", tiny_detector_file, "--input-size", "native")
    assert code == 0 and records[0]["width"] == 28
    code, records, err = run_cli(capsys, "detect", tmp_path / "nope.png", path, "--model", tiny_detector_file)
    assert code == 1 and "no such file" in err and len(records) == 2
    with pytest.raises(SystemExit):
        main(["detect", str(path), "--input-size", "huge"])


def test_convert_gives_identical_outputs(capsys, tmp_path):
    destination = tmp_path / "official.safetensors"
    code = main(["convert", str(FIXTURES / "swin_w7.pth"), str(destination)])
    assert code == 0 and destination.exists()
    images = torch.rand(2, 70, 90, 3)
    original = load_detector(FIXTURES / "swin_w7.pth", device="cpu", dtype="fp32", input_size=None)
    converted = load_detector(destination, device="cpu", dtype="fp32", input_size=None)
    assert converted.info.format == "safetensors" and converted.name == "official"
    assert torch.equal(original.predict(images), converted.predict(images))
    assert main(["convert", str(FIXTURES / "swin_w7.pth"), str(destination)]) == 2  # exists
    assert "already exists" in capsys.readouterr().err
    not_a_model = tmp_path / "x.pth"
    not_a_model.write_bytes(b"junk")
    assert main(["convert", str(not_a_model), str(tmp_path / "y.safetensors")]) == 2
    assert not (tmp_path / "y.safetensors").exists()


@pytest.mark.parametrize("flag", ["--clean-share", "--photo-share"])
def test_prepare_data_refuses_shares_outside_0_1_before_doing_anything(tmp_path, capsys, flag):
    out = tmp_path / "data"
    assert main(["prepare-data", "--out", str(out), flag, "1.5"]) == 2
    assert f"{flag} must be between 0 and 1, not 1.5" in capsys.readouterr().err
    assert not out.exists()
