"""Hostile and broken inputs for the commands that read images and write files (issue 13, cases 2-6, 10).

Every case ends in a clear message and an exit code, loses no file and writes nothing outside its place.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pal_core import atomic
from pal_core.cli import main
from pal_core.imageio import ImageReadError, read_image
from pal_core.rank.scores import record_lock


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height (a decompression bomb is this header and a small, highly
    compressible IDAT); only the header matters, as the size is refused before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                     + chunk(b"IEND", b""))
    return path


def image(path: Path, seed: int = 0, size=(24, 32)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def model_args(tiny_detector_file) -> list[str]:
    return ["--model", tiny_detector_file, "--device", "cpu", "--input-size", "64"]


# ------------------------------------------------------------------------ case 2: decompression bombs


def test_a_bomb_is_refused_from_its_header_and_the_other_images_are_processed(tmp_path, capsys, tiny_detector_file):
    bomb = png_header_only(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 2000
    good = image(tmp_path / "good.png")
    out = tmp_path / "out"
    code = main(["detect", str(bomb), str(good), *model_args(tiny_detector_file), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" not in captured.err
    assert "more than the limit of 80,000,000 pixels" in captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert "error" in lines[0] and lines[1]["image"] == str(good) and (out / "good.mask.png").is_file()
    code = main(["fix", str(bomb), str(good), *model_args(tiny_detector_file), "--out", str(tmp_path / "fixed")])
    err = capsys.readouterr().err
    assert code == 1 and "more than the limit" in err and (tmp_path / "fixed" / "good.png").is_file()


def test_a_mid_sized_bomb_is_refused_before_it_takes_gigabytes(tmp_path):
    bomb = png_header_only(tmp_path / "big.png", 12000, 12000)
    with pytest.raises(ImageReadError, match=r"12000x12000 pixels .* decodes to 1.7 GB.*PAL_MAX_IMAGE_PIXELS"):
        read_image(bomb)


def test_the_pixel_limit_is_configurable(tmp_path, monkeypatch):
    small = image(tmp_path / "small.png", size=(16, 16))
    monkeypatch.setenv("PAL_MAX_IMAGE_PIXELS", "255")
    with pytest.raises(ImageReadError, match="16x16 pixels is more than the limit of 255"):
        read_image(small)
    monkeypatch.setenv("PAL_MAX_IMAGE_PIXELS", "256")
    assert read_image(small).shape == (16, 16, 3)
    monkeypatch.setenv("PAL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageReadError, match="must be a number of pixels"):
        read_image(small)


def test_a_bomb_given_to_pal_run_as_a_workflow_png(tmp_path, capsys):
    bomb = png_header_only(tmp_path / "graph.png", 30000, 30000)
    code = main(["run", str(bomb), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "graph.png" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_an_animation_counts_all_its_frames(tmp_path, monkeypatch):
    from pal_core.imageio import read_frames
    frames = [Image.new("RGB", (10, 10), (i * 20, 0, 0)) for i in range(5)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    monkeypatch.setenv("PAL_MAX_IMAGE_PIXELS", "499")
    with pytest.raises(ImageReadError, match="x 5 frames"):
        read_frames(path)
    monkeypatch.setenv("PAL_MAX_IMAGE_PIXELS", "500")
    assert len(read_frames(path)) == 5


# ------------------------------------------------------------------------ cases 3, 4: pal rank's record


def test_rank_never_replaces_a_foreign_jsonl_or_csv(tmp_path, capsys, tiny_detector_file):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(folder / "a.png")
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"user": "data", "keep": true}\n{"image": "x.png", "caption": "a cat"}\nnot json at all\n')
    before = foreign.read_bytes()
    assert main(["rank", str(folder), "--out", str(foreign), *model_args(tiny_detector_file), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds 3 lines that are not pal rank score records" in err and "line 1:" in err
    assert foreign.read_bytes() == before
    table = tmp_path / "table.csv"
    table.write_text("name,value\nrent,1200\n")
    assert main(["rank", str(folder), "--out", str(table), *model_args(tiny_detector_file), "--no-progress"]) == 2
    assert "no pal rank run made it" in capsys.readouterr().err and table.read_text() == "name,value\nrent,1200\n"
    assert not (tmp_path / "table.csv.records.jsonl").exists()
    assert main(["rank", str(folder), "--out", str(table), *model_args(tiny_detector_file), "--no-progress",
                 "--overwrite"]) == 0
    assert table.read_text().startswith("rank,image,par")
    # the run made it now (its record is beside it): the same command resumes and may replace it
    assert main(["rank", str(folder), "--out", str(table), *model_args(tiny_detector_file), "--no-progress"]) == 0


def test_a_damaged_line_in_the_middle_of_a_record_is_reported_not_dropped(tmp_path, capsys, tiny_detector_file):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        image(folder / f"{i}.png", seed=i)
    out = tmp_path / "scores.jsonl"
    assert main(["rank", str(folder), "--out", str(out), *model_args(tiny_detector_file), "--no-progress"]) == 0
    lines = out.read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # a line damaged by hand or by a disk error
    out.write_text("".join(lines))
    before = out.read_bytes()
    image(folder / "3.png", seed=3)
    assert main(["rank", str(folder), "--out", str(out), *model_args(tiny_detector_file), "--no-progress"]) == 2
    assert "line 2:" in capsys.readouterr().err and out.read_bytes() == before


def test_the_lock_covers_the_final_sort_and_replace(tmp_path, capsys, monkeypatch, tiny_detector_file):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        image(folder / f"{i}.png", seed=i)
    out = tmp_path / "scores.jsonl"
    from pal_core.cli import rank as rank_cli
    real_export, second = rank_cli.export_ranking, []

    def export_while_another_run_starts(ranking, path):
        second.append(main(["rank", str(folder), "--out", str(out), *model_args(tiny_detector_file), "--no-progress"]))
        return real_export(ranking, path)

    monkeypatch.setattr(rank_cli, "export_ranking", export_while_another_run_starts)
    assert main(["rank", str(folder), "--out", str(out), *model_args(tiny_detector_file), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert second == [2] and "being written by another pal rank run" in err and "Traceback" not in err
    assert len(out.read_text().splitlines()) == 4


def test_a_second_run_is_refused_before_any_work_while_the_first_holds_the_record(tmp_path, capsys, tiny_detector_file):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(folder / "a.png")
    out = tmp_path / "scores.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pal_core.rank.scores import record_lock\n"
                               f"with record_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["rank", str(folder), "--out", str(out), *model_args(tiny_detector_file), "--no-progress"]) == 2
        assert "being written by another pal rank run" in capsys.readouterr().err
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    with record_lock(out):  # released with the process
        pass


# ------------------------------------------------------------------------ case 5: an output that is an input


def test_fix_into_its_own_input_folder_is_refused_even_with_overwrite(tmp_path, capsys, tiny_detector_file):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        image(folder / f"{i}.png", seed=i)
    before = tree_bytes(folder)
    code = main(["fix", str(folder), "--out", str(folder), "--overwrite", *model_args(tiny_detector_file)])
    err = capsys.readouterr().err
    assert code == 2 and "would replace the input" in err
    assert tree_bytes(folder) == before


def test_detect_outputs_that_are_inputs_are_refused(tmp_path, capsys, tiny_detector_file):
    folder = tmp_path / "in"
    folder.mkdir()
    image(folder / "a.png")
    image(folder / "a.mask.png", seed=1)  # an input that a.png's mask would replace
    before = tree_bytes(folder)
    code = main(["detect", str(folder), "--out", str(folder), "--overwrite", *model_args(tiny_detector_file)])
    assert code == 2 and "would replace the input" in capsys.readouterr().err
    assert tree_bytes(folder) == before


def test_rank_sheet_over_an_input_image_is_refused(tmp_path, capsys, tiny_detector_file):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(folder / "a.png")
    code = main(["rank", str(folder), "--out", str(tmp_path / "s.jsonl"), "--top-k", "1", "--sheet",
                 str(folder / "a.png"), "--overwrite", *model_args(tiny_detector_file), "--no-progress"])
    assert code == 2 and "is one of the images being ranked" in capsys.readouterr().err
    assert not (tmp_path / "s.jsonl").exists()


# ------------------------------------------------------------------------ case 6: killed runs resume


def test_detect_resumes_after_a_kill_and_cleans_its_temporaries(tmp_path, tiny_detector_file):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        image(folder / f"{i:02d}.png", seed=i, size=(48, 48))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pal_core.cli", "detect", str(folder), "--out", str(out),
               *model_args(tiny_detector_file)]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob("*.png")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    # and a temporary as a kill mid-write leaves it (the writer's process is gone)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".05.prob.png.{dead.stdout.strip()}.0badf00d{atomic.TEMP_SUFFIX}"
    stale.write_bytes(b"half a png")
    done_before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    records = [json.loads(line) for line in rerun.stdout.splitlines()]
    assert len(records) == 12 and not stale.exists()
    assert sorted(p.name for p in out.iterdir() if p.name != ".pal-detect.lock") == sorted(
        f"{i:02d}.{k}.png" for i in range(12) for k in ("mask", "prob", "overlay"))
    assert all((out / name).read_bytes() == data for name, data in done_before.items())  # kept, not redone
    finished = {Path(r["image"]).stem for r in records if "skipped" in r}
    assert finished == {n.split(".")[0] for n in done_before if all(
        f"{n.split('.')[0]}.{k}.png" in done_before for k in ("mask", "prob", "overlay"))}
    summary = rerun.stderr.splitlines()[-1]
    assert summary.startswith("pal detect: 12 images: ")
    assert (f", {len(finished)} already done by an earlier run (skipped)" in summary) == bool(finished)
    again = subprocess.run(command, capture_output=True, text=True)  # everything done: nothing runs, all counted
    assert again.stderr.splitlines()[-1] == (f"pal detect: 12 images: 12 already done by an earlier run (skipped); "
                                             f"masks, probabilities and overlays in {out}")


def test_fix_resumes_and_redoes_an_unfinished_image(tmp_path, capsys, tiny_detector_file):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        image(folder / f"{i}.png", seed=i, size=(40, 40))
    out = tmp_path / "out"
    assert main(["fix", str(folder), "--out", str(out), *model_args(tiny_detector_file)]) == 0
    (out / "1.json").unlink()  # killed between the picture and its report
    kept = (out / "0.png").stat().st_mtime_ns
    assert main(["fix", str(folder), "--out", str(out), *model_args(tiny_detector_file)]) == 0
    err = capsys.readouterr().err
    assert "pal fix: 3 images: " in err and ", 2 already fixed by an earlier run (skipped)" in err
    assert "0.png: already fixed in" in err and "2.png: already fixed in" in err
    assert (out / "1.json").is_file() and (out / "0.png").stat().st_mtime_ns == kept
    assert main(["fix", str(folder), "--out", str(out), *model_args(tiny_detector_file)]) == 0  # all done
    summary = capsys.readouterr().err.splitlines()[-1]
    assert summary == f"pal fix: 3 images: 3 already fixed by an earlier run (skipped); results (PNG + JSON per image) in {out}"


# ------------------------------------------------------------------------ case 10: output places


@pytest.mark.parametrize("command", ["detect", "fix", "rank"])
def test_an_out_that_is_a_file_or_under_a_file_fails_before_any_work(tmp_path, capsys, tiny_detector_file, command):
    source = image(tmp_path / "a.png")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file of the user's")
    out = (blocker / "x.jsonl") if command == "rank" else blocker
    code = main([command, str(source), "--out", str(out), *model_args(tiny_detector_file),
                 *(["--no-progress"] if command == "rank" else [])])
    err = capsys.readouterr().err
    assert code == 2 and "is a file" in err and "Traceback" not in err
    assert blocker.read_text() == "a file of the user's"


@pytest.mark.parametrize("option", ["--copy-best", "--sheet"])
def test_rank_places_under_a_file_fail_before_scoring(tmp_path, capsys, tiny_detector_file, option):
    folder = tmp_path / "imgs"
    folder.mkdir()
    image(folder / "a.png")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    place = blocker / ("best" if option == "--copy-best" else "sheet.png")
    out = tmp_path / "s.jsonl"
    code = main(["rank", str(folder), "--out", str(out), "--top-k", "1", option, str(place),
                 *model_args(tiny_detector_file), "--no-progress"])
    assert code == 2 and "is a file" in capsys.readouterr().err
    assert not out.exists()  # nothing was scored


def test_a_read_only_out_is_found_before_any_work(tmp_path, capsys, monkeypatch, tiny_detector_file):
    source = image(tmp_path / "a.png")
    out = tmp_path / "ro"
    out.mkdir()
    real_write = Path.write_bytes

    def refuse(self, data):  # as a read-only folder does (tests may run as root, which chmod does not stop)
        if self.parent == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)
    code = main(["detect", str(source), "--out", str(out), *model_args(tiny_detector_file)])
    captured = capsys.readouterr()
    assert code == 2 and "is not writable (permission denied" in captured.err and captured.out == ""


def test_a_full_disk_stops_the_run_with_a_message_and_no_half_file(tmp_path, capsys, monkeypatch, tiny_detector_file):
    for i in range(3):
        image(tmp_path / f"{i}.png", seed=i)
    out = tmp_path / "out"

    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "_fsync_file", disk_full)
    code = main(["detect", *(str(tmp_path / f"{i}.png") for i in range(3)), "--out", str(out),
                 *model_args(tiny_detector_file)])
    err = capsys.readouterr().err
    assert code == 1 and "the disk is full" in err and "run the same command again" in err
    assert [p.name for p in out.iterdir()] == [".pal-detect.lock"]  # no half file, no temporary
    monkeypatch.setattr(atomic, "_fsync_file", disk_full)
    code = main(["rank", str(tmp_path / "0.png"), "--out", str(tmp_path / "r.csv"), *model_args(tiny_detector_file),
                 "--no-progress"])
    assert code == 1 and "the disk is full" in capsys.readouterr().err and not (tmp_path / "r.csv").exists()


def test_rank_globs_end_on_a_tree_with_a_folder_link_loop(tmp_path, capsys, tiny_detector_file):
    root = tmp_path / "data"
    (root / "a" / "b").mkdir(parents=True)
    image(root / "top.png")
    image(root / "a" / "b" / "deep.png", seed=1)
    os.symlink(root, root / "a" / "b" / "loop")  # data/a/b/loop -> data
    os.symlink(root / "a", root / "a" / "again")
    out = tmp_path / "s.jsonl"
    code = main(["rank", f"{root}/**/*.png", str(root), "--out", str(out), *model_args(tiny_detector_file),
                 "--no-progress"])
    assert code == 0
    assert sorted(Path(json.loads(line)["image"]).name for line in out.read_text().splitlines()) == ["deep.png",
                                                                                                      "top.png"]
