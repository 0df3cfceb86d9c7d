"""`pal fix` run in-process with the tiny detector."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pal_core.refinement.inpainters import default_weight_free



def main(argv: list[str]) -> int:
    """`pal` in-process. Imported per call so that a broken sibling subcommand fails these tests only."""
    from pal_core.cli import main as pal_main

    return pal_main(argv)


def write_image(path, seed: int, size=(48, 40), mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = 4 if mode == "RGBA" else 3
    Image.fromarray(rng.integers(0, 256, size=(*size, channels), dtype=np.uint8), mode).save(path)
    return path


def fix_args(tiny_detector_file, out, *paths, extra=()):
    """Arguments for the tiny random detector, whose probabilities lie in 0.51..0.60: 0.56 marks 10-30%."""
    return ["fix", *map(str, paths), "--out", str(out), "--model", tiny_detector_file, "--device", "cpu",
            "--input-size", "64", "--threshold", "0.56", "--min-side", "16", "--resolution", "32", "--min-area", "4", *extra]


def test_fix_writes_images_and_reports(tmp_path, tiny_detector_file):
    a = write_image(tmp_path / "a.png", 0)
    b = write_image(tmp_path / "b.png", 1, mode="RGBA")
    out = tmp_path / "out"
    assert main(fix_args(tiny_detector_file, out, a, b)) == 0
    regions = 0
    for name, source in (("a", a), ("b", b)):
        report = json.loads((out / f"{name}.json").read_text())
        assert report["input"] == str(source) and report["size"] == [48, 40]
        assert report["inpainter"] == default_weight_free() and 0.0 <= report["par_before"] <= 1.0
        assert report["par_after"] is not None
        regions += len(report["regions"])
        for region in report["regions"]:
            x0, y0, x1, y1 = region["box"]
            assert x1 - x0 == y1 - y0 >= 16 and region["artifact_px_before"] > 0
        written = np.asarray(Image.open(out / f"{name}.png"))
        original = np.asarray(Image.open(source))
        assert written.shape == original.shape  # RGBA stays RGBA
        if not any(r["kept"] for r in report["regions"]):
            assert np.array_equal(written, original)
        else:
            assert report["par_after"] < report["par_before"]
    assert regions > 0  # the tiny detector does find regions at this threshold, so the checks above ran
    assert not list(out.glob(".*tmp"))


def test_fix_refuses_to_overwrite(tmp_path, tiny_detector_file, capsys):
    a = write_image(tmp_path / "a.png", 0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"keep me")
    assert main(fix_args(tiny_detector_file, out, a)) == 2  # checked before any work
    assert (out / "a.png").read_bytes() == b"keep me" and not (out / "a.json").exists()
    assert "already exists and was not made from" in capsys.readouterr().err
    assert main(fix_args(tiny_detector_file, out, a, extra=["--overwrite"])) == 0
    assert (out / "a.png").read_bytes() != b"keep me" and (out / "a.json").is_file()


def test_corrupt_input_is_reported_and_the_others_are_fixed(tmp_path, tiny_detector_file, capsys):
    good = write_image(tmp_path / "good.png", 2)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    assert main(fix_args(tiny_detector_file, out, broken, good)) == 1
    assert (out / "good.png").is_file() and (out / "good.json").is_file()
    assert not (out / "broken.png").exists() and not (out / "broken.json").exists()
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 of 2 images failed" in err


def test_bad_settings_and_models_fail_before_any_work(tmp_path, tiny_detector_file, capsys):
    a = write_image(tmp_path / "a.png", 0)
    out = tmp_path / "out"
    assert main(fix_args(tiny_detector_file, out, a, extra=["--inpainter", "lama"])) == 2
    assert "unknown inpainter 'lama'" in capsys.readouterr().err
    assert main(fix_args(tiny_detector_file, out, a, extra=["--zoom", "0.5"])) == 2
    assert "zoom must be >= 1" in capsys.readouterr().err
    assert main(["fix", str(a), "--out", str(out), "--model", str(tmp_path / "missing.safetensors")]) == 2
    assert "model file not found" in capsys.readouterr().err
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "a.jpg", 3)
    assert main(fix_args(tiny_detector_file, out, a, tmp_path / "sub" / "a.jpg")) == 2
    assert "would both be written to" in capsys.readouterr().err
    assert not out.exists()
