"""Odd files and places around the model and training commands: each a sentence and an exit code, never a
traceback, and found before the work (issue 25, part 3)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pal_core import atomic, load_detector
from pal_core.cli import main
from pal_core.hub import catalogue
from pal_core.hub.download import DownloadError, download_model
from pal_core.train.distillation import DistillationError, DistillSettings, TeacherCache, distill, list_user_images


def read_only(monkeypatch, folder: Path) -> None:
    """Writes into `folder` fail as in a read-only folder (tests may run as root, which chmod does not stop)."""
    real_write = Path.write_bytes

    def refuse(self, data):
        if self.parent == folder:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", refuse)


def images(folder: Path, count: int = 4) -> Path:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


# ------------------------------------------------------------------------ pal models


def test_models_lists_a_dangling_link_a_folder_and_a_fifo_without_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PAL_HOME", str(tmp_path))
    models = tmp_path / "models"
    models.mkdir()
    (models / "dangling.safetensors").symlink_to(tmp_path / "gone.safetensors")
    (models / "x.safetensors").mkdir()
    (models / "x.safetensors.sha256").write_text("0" * 64 + "  x.safetensors\n")
    os.mkfifo(models / "pipe.safetensors")
    (models / "pipe.safetensors.sha256").write_text("0" * 64 + "  pipe.safetensors\n")
    assert main(["models", "--verify"]) == 0  # returns: the FIFO is never opened
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert "a link to a missing file named like a model" in out and "a folder named like a model" in out
    assert "a special file (not a regular file) named like a model" in out
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["dangling"]["status"] == rows["x"]["status"] == rows["pipe"]["status"] == "not a file"


def test_models_shows_a_file_name_with_escape_sequences_escaped(tmp_path, capsys, monkeypatch, tiny_detector_file):
    monkeypatch.setenv("PAL_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    os.symlink(tiny_detector_file, tmp_path / "models" / "evil\x1b]0;t\x07.safetensors")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\x1b]0;t\\x07" in out


def test_verify_never_hashes_a_folder(tmp_path):
    from pal_core.hub.model_store import verify
    (tmp_path / "x.safetensors").mkdir()
    assert not verify(tmp_path / "x.safetensors").ok
    assert "not a regular file" in verify(tmp_path / "x.safetensors").message


def test_models_add_with_a_300_character_name_is_a_sentence(tmp_path, capsys, tiny_detector_file):
    code = main(["models", "add", tiny_detector_file, "--name", "a" * 300, "--dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "at most 100 printable characters, not 300" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_models_add_into_a_read_only_folder_is_found_before_reading(tmp_path, capsys, monkeypatch, tiny_detector_file):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(monkeypatch, folder)
    code = main(["models", "add", tiny_detector_file, "--name", "mine", "--dir", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and "the models folder" in err and "the file system is read-only" in err and "--dir" in err
    assert list(folder.iterdir()) == []


def test_models_add_failing_while_writing_is_a_sentence(tmp_path, capsys, monkeypatch, tiny_detector_file):
    def refuse(path):
        raise OSError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(atomic, "_fsync_file", refuse)
    code = main(["models", "add", tiny_detector_file, "--name", "mine", "--dir", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "could not install into" in err and "permission denied" in err and "Traceback" not in err
    assert not (tmp_path / "m" / "mine.safetensors").exists()


def test_download_into_a_read_only_folder_fails_before_any_byte(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(monkeypatch, folder)
    with pytest.raises(DownloadError, match="the models folder .* is not writable .*read-only.*--dir"):
        download_model("pal4vst-unified", folder, show_progress=False)


def test_a_deeply_nested_catalogue_is_a_sentence(tmp_path, capsys, monkeypatch):
    path = tmp_path / "catalogue.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    monkeypatch.setenv(catalogue.CATALOGUE_ENV, str(path))
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply to be a catalogue" in err and "Traceback" not in err


# ------------------------------------------------------------------------ pal convert


def test_convert_onto_a_read_only_place_is_found_before_reading(tmp_path, capsys, monkeypatch, tiny_detector_file):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(monkeypatch, folder)
    assert main(["convert", tiny_detector_file, str(folder / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "the folder of the destination" in err and "read-only" in err and "Traceback" not in err


def test_convert_failing_while_writing_is_a_sentence(tmp_path, capsys, monkeypatch, tiny_detector_file):
    def refuse(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic, "_fsync_file", refuse)
    assert main(["convert", tiny_detector_file, str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "the file system is read-only" in err and "nothing was written" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ pal distill


@pytest.fixture
def teacher(tiny_detector_file):
    # fp32: a map computed again must equal the first one bit for bit; under auto on a CPU with bf16 units
    # the guard's history and the batch a picture runs in decide bf16 or fp32 and its rounding
    return load_detector(tiny_detector_file, device="cpu", input_size=64, dtype="fp32")


def test_distill_cache_that_is_a_file_fails_before_the_teacher_runs(tmp_path, capsys, tiny_detector_file):
    cache = tmp_path / "cache"
    cache.write_text("my notes")
    code = main(["distill", "--images", str(images(tmp_path / "imgs")), "--teacher", tiny_detector_file,
                 "--out", str(tmp_path / "s.safetensors"), "--cache", str(cache), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "the teacher cache (--cache)" in err and "is a file" in err and "Traceback" not in err
    assert cache.read_text() == "my notes" and not (tmp_path / "s.run").exists()


def test_distill_out_under_a_file_fails_before_the_teacher_runs(tmp_path, teacher):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DistillationError, match="nothing was done: the folder of --out .* is a file"):
        distill(teacher, [images(tmp_path / "imgs")], tmp_path / "file" / "s.safetensors", cache_dir=tmp_path / "c",
                device="cpu", progress=False)
    assert not (tmp_path / "c").exists()


def test_distill_out_on_a_read_only_folder_fails_before_the_teacher_runs(tmp_path, monkeypatch, teacher):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(monkeypatch, folder)
    with pytest.raises(DistillationError, match="nothing was done: .*read-only"):
        distill(teacher, [images(tmp_path / "imgs")], folder / "s.safetensors", run_dir=tmp_path / "run",
                cache_dir=tmp_path / "c", device="cpu", progress=False)
    assert not (tmp_path / "c").exists()


def test_distill_report_place_is_checked_before_the_work(tmp_path, capsys, tiny_detector_file):
    (tmp_path / "file").write_text("x")
    code = main(["distill", "--images", str(images(tmp_path / "imgs")), "--teacher", tiny_detector_file,
                 "--out", str(tmp_path / "s.safetensors"), "--report", str(tmp_path / "file" / "r.json"),
                 "--cache", str(tmp_path / "c"), "--device", "cpu"])
    assert code == 2 and "--report" in capsys.readouterr().err and not (tmp_path / "c").exists()


@pytest.mark.parametrize("size", [10**9, 8])
def test_a_huge_or_tiny_map_size_is_refused(tmp_path, capsys, tiny_detector_file, size):
    with pytest.raises(DistillationError, match="map size must be from 16 to 2048 pixels"):
        DistillSettings(map_size=size)
    code = main(["distill", "--images", str(images(tmp_path / "imgs")), "--teacher", tiny_detector_file,
                 "--out", str(tmp_path / "s.safetensors"), "--map-size", str(size), "--cache", str(tmp_path / "c"),
                 "--device", "cpu"])
    assert code == 2 and "map size must be from 16" in capsys.readouterr().err


def test_a_truncated_teacher_map_is_computed_again(tmp_path, teacher):
    found = list_user_images([images(tmp_path / "imgs")])
    cache = TeacherCache(tmp_path / "cache", teacher, 32)
    assert cache.fill(found, progress=False).computed == 4
    good = cache.read(found[1])
    damaged = cache.path(found[1])
    damaged.write_bytes(damaged.read_bytes()[:40])
    report = cache.fill(found, progress=False)
    assert (report.computed, report.reused) == (1, 3)
    assert np.array_equal(cache.read(found[1]), good)
