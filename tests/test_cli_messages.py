"""What `pal detect` and `pal fix` tell a person: progress bar, a line per image, summary, advice, sheets."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core.cli import main
from pal_core.sheets import SheetStyle, _fit, draw_sheet, fix_row
from pal_core.verdicts import OFFICIAL_MODEL, FixTally, fix_line, fix_summary, region_verdict


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so the progress bar is drawn."""

    def isatty(self) -> bool:
        return True


def write_images(folder, count=2, size=(48, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def fix_argv(model, out, paths, *extra):
    # the tiny random detector's probabilities lie in 0.51..0.60: 0.56 marks 10-30% of an image
    return ["fix", *map(str, paths), "--out", str(out), "--model", model, "--device", "cpu", "--input-size", "64",
            "--threshold", "0.56", "--min-side", "16", "--resolution", "32", "--min-area", "4", *extra]


def test_fix_prints_a_line_per_image_and_a_summary_without_a_bar_when_not_a_terminal(
        tmp_path, tiny_detector_file, capsys):
    paths = write_images(tmp_path / "in")
    out = tmp_path / "out"
    assert main(fix_argv(tiny_detector_file, out, paths)) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    for path in paths:
        report = json.loads((out / f"{path.stem}.json").read_text())
        assert fix_line(path.name, report, str(out / f"{path.stem}.png")) in lines
    assert any(line.startswith("pal fix: 2 images: ") and str(out) in line for line in lines)
    assert "%|" not in captured.err and "image/s" not in captured.err  # no bar in a log
    assert captured.out == ""  # the results are the files


def test_fix_draws_a_bar_on_a_terminal_and_quiet_hides_everything_but_errors(
        tmp_path, tiny_detector_file, capsys, monkeypatch):
    paths = write_images(tmp_path / "in")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(fix_argv(tiny_detector_file, tmp_path / "a", paths)) == 0
    assert "fix: 100%|" in terminal.getvalue() and "2/2" in terminal.getvalue()
    assert "pal fix: 2 images: " in terminal.getvalue()

    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    assert main(fix_argv(tiny_detector_file, tmp_path / "b", [*paths, broken], "--quiet")) == 1
    assert quiet.getvalue().splitlines()[0].startswith(f"pal fix: {broken}")  # errors still show
    assert "%|" not in quiet.getvalue() and "img0.png" not in quiet.getvalue()
    assert quiet.getvalue().splitlines()[-1] == "pal fix: 1 of 3 images failed"


def test_nothing_found_says_so_and_what_to_try(tmp_path, tiny_detector_file, capsys):
    paths = write_images(tmp_path / "in", count=1)
    argv = fix_argv(tiny_detector_file, tmp_path / "out", paths)
    argv[argv.index("--threshold") + 1] = "0.95"
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "img0.png: PAR 0.0000, no artifact region to fix" in err
    assert "no artifact was found at --threshold 0.95" in err and f"pal download {OFFICIAL_MODEL}" in err

    code = main(["detect", str(paths[0]), "--model", tiny_detector_file, "--device", "cpu", "--input-size", "64",
                 "--threshold", "0.95"])
    captured = capsys.readouterr()
    err, highest = captured.err, json.loads(captured.out)["max_prob"]
    assert code == 0 and "img0.png: PAR 0.0000, 0 regions" in err
    assert "1 image: 0 with artifacts, 1 without" in err
    assert f"highest probability seen was {highest:.2f}" in err and f"pal download {OFFICIAL_MODEL}" in err


def test_detect_lines_and_quiet(tmp_path, tiny_detector_file, capsys):
    paths = write_images(tmp_path / "in")
    argv = ["detect", *map(str, paths), "--model", tiny_detector_file, "--device", "cpu", "--input-size", "64",
            "--threshold", "0.56"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert len(records) == 2  # JSON stays on stdout
    for record, path in zip(records, paths):
        assert f"{path.name}: PAR {record['par']:.4f}, " in captured.err
    assert "pal detect: 2 images: 2 with artifacts" in captured.err
    assert main([*argv, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and len(captured.out.splitlines()) == 2


def test_every_fix_rejected_gives_advice():
    tally = FixTally(0.5, "opencv-telea", ("opencv-ns",))
    rejected = {"region": 0, "artifact_px_before": 12, "artifact_px_after": 1204, "kept": False}
    report = {"par_before": 0.01, "par_after": 0.01, "skipped": None, "regions": [rejected]}
    tally.add(report)
    assert region_verdict(rejected) == "#0 rejected (artifact px 12 -> 1204: not fewer)"
    assert fix_line("a.png", report, "out/a.png") == (
        "a.png: PAR 0.0100 -> 0.0100; 0 of 1 region fixed: #0 rejected (artifact px 12 -> 1204: not fewer) "
        "-> out/a.png")
    summary = tally.summary("out")
    assert summary[0] == "1 image: 0 improved (0 regions fixed), 1 unchanged (every fix rejected); results (PNG + JSON per image) in out"
    assert "--inpainter opencv-ns" in summary[1] and "every fix was undone" in summary[1]
    kept = dict(rejected, artifact_px_after=3, kept=True)
    tally.add(dict(report, regions=[kept, rejected]))
    assert tally.summary("out") == [
        "2 images: 1 improved (1 region fixed), 1 unchanged (every fix rejected); results (PNG + JSON per image) in out"]


@pytest.mark.parametrize("regions", [0, 2, 9])
def test_fix_sheet_has_the_panels_and_size(tmp_path, regions):
    style = SheetStyle(panel=64, max_regions=3)
    image = torch.rand(40, 60, 3)
    mask = torch.zeros(40, 60, dtype=torch.bool)
    reports = [{"region": i, "box": [4 * i, 0, 4 * i + 16, 16], "artifact_px_before": 5, "artifact_px_after": 1,
                "kept": True} for i in range(regions)]
    result = image.clone()
    result[:16, :16] = 0.0
    rows = [fix_row("a", image, mask, result, result, reports, 0.1, 0.05, style),
            fix_row("b", image, mask, image, image, [], 0.0, 0.0, style)]
    sheet = draw_sheet(rows, style)
    width, height = style.sheet_size(2)
    assert sheet.shape == (height, width, 3) and sheet.dtype == np.uint8
    assert width == style.gap + 3 * (64 + style.gap) + 3 * (style.crop + style.gap)
    assert len(rows[0].regions) == min(regions, 3) and rows[0].more_regions == max(0, regions - 3)
    # the input panel is the input, scaled to fit (60x40 -> 64x43, centred vertically)
    expected = np.asarray(_fit(image, 64))
    top = style.gap + style.title + (64 - expected.shape[0]) // 2
    assert np.array_equal(sheet[top:top + expected.shape[0], style.gap:style.gap + 64], expected)
    # a region column shows the crop before over the crop after
    if regions:
        x = style.gap + 3 * (64 + style.gap)
        before = np.asarray(_fit(image[0:16, 0:16], style.crop))
        after = np.asarray(_fit(result[0:16, 0:16], style.crop))
        y = style.gap + style.title
        assert np.array_equal(sheet[y + 12:y + style.crop, x:x + style.crop], before[12:])  # below the "#0" label
        lower = y + style.crop + style.caption
        assert np.array_equal(sheet[lower:lower + style.crop, x:x + style.crop], after)


def test_fix_and_detect_write_sheets_and_refuse_to_overwrite_one(tmp_path, tiny_detector_file, capsys):
    paths = write_images(tmp_path / "in", count=3)
    sheet = tmp_path / "sheet.png"
    assert main(fix_argv(tiny_detector_file, tmp_path / "out", paths, "--sheet", str(sheet))) == 0
    width, height = SheetStyle().sheet_size(3)
    assert Image.open(sheet).size == (width, height)
    assert f"before/after sheet of every image in {sheet}" in capsys.readouterr().err
    before = sheet.read_bytes()
    assert main(fix_argv(tiny_detector_file, tmp_path / "out2", paths, "--sheet", str(sheet))) == 2
    assert "already exists" in capsys.readouterr().err and sheet.read_bytes() == before
    assert not (tmp_path / "out2").exists()  # refused before any work

    detect_sheet = tmp_path / "detect.png"
    assert main(["detect", *map(str, paths), "--model", tiny_detector_file, "--device", "cpu", "--input-size", "64",
                 "--sheet", str(detect_sheet), "--quiet"]) == 0
    assert Image.open(detect_sheet).size == (width, height)
    assert main(["detect", str(paths[0]), "--model", tiny_detector_file, "--sheet", str(tmp_path / "s.jpg")]) == 2
    assert "--sheet must be a .png file" in capsys.readouterr().err


def test_without_opencv_contrib_the_default_inpainter_falls_back_and_says_so(
        tmp_path, tiny_detector_file, capsys, monkeypatch):
    from pal_core.refinement import inpainters

    monkeypatch.setattr(inpainters, "has_xphoto", lambda: False)
    paths = write_images(tmp_path / "in", count=1)
    assert main(fix_argv(tiny_detector_file, tmp_path / "out", paths)) == 0
    assert "this OpenCV lacks the contrib modules, so the inpainter is opencv-ns" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "img0.json").read_text())["inpainter"] == "opencv-ns"


def test_the_official_model_is_suggested_only_to_those_who_do_not_use_it():
    clean = {"par_before": 0.0, "par_after": 0.0, "skipped": None, "regions": []}
    for detector, suggested in (("pal_lite", True), ("pal4vst-unified", False)):
        tally = FixTally(0.5, "opencv-ns", detector=detector)
        tally.add(clean)
        advice = tally.summary("out")[1]
        assert "no artifact was found at --threshold 0.5" in advice
        assert (f"pal download {OFFICIAL_MODEL}" in advice) == suggested


def test_a_node_is_advised_in_its_own_widgets_never_in_command_line_options():
    rejected = {"region": 0, "artifact_px_before": 12, "artifact_px_after": 1204, "kept": False}
    reports = [{"par_before": 0.01, "par_after": 0.01, "skipped": None, "regions": [rejected]},
               {"par_before": 0.0, "par_after": 0.0, "skipped": None, "regions": []},
               {"par_before": 0.9, "par_after": None, "skipped": "the mask covers 90% of the image", "regions": []}]
    summary = fix_summary(reports, 0.5, "opencv-ns", "pal_lite")
    advice = summary.splitlines()[4:]
    assert len(advice) == 3 and "--" not in summary and "pal download" not in summary
    assert "every fix was undone" in advice[0] and "color_match on, or redetect off" in advice[0]
    assert "no artifact was found at threshold 0.5" in advice[1] and "(e.g. 0.3)" in advice[1]
    assert f"choose {OFFICIAL_MODEL} on Load Artifact Detector with download_if_missing on" in advice[1]
    assert advice[2].startswith("left alone: the mask covers 90% of the image; raise threshold")
    # The command line keeps its options, in the same order of advice.
    tally = FixTally(0.5, "opencv-ns", ("opencv-telea",), detector="pal_lite")
    for report in reports:
        tally.add(report)
    command = tally.summary("out")[1:]
    assert "--inpainter opencv-telea" in command[0] and "--threshold 0.3" in command[1]
    assert f"pal download {OFFICIAL_MODEL}" in command[1] and "--max-area-ratio" in command[2]
