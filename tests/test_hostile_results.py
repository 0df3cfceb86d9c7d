"""Results that must never be lost, mixed or reused wrongly (issue 25, part 2).

`pal fix` locks its --out as `pal rank` locks its record; a fixed image is reused only when its input,
the model file and every setting match what its report recorded; `pal rank` records carry the model
file's hash and a PAR outside 0..1 is never trusted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_model
from pal_core import DetectorCheckpoint, save_detector_file
from pal_core.cli import main
from pal_core.cli.fix import LOCK_NAME


def image(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


def model_args(model) -> list[str]:
    return ["--model", str(model), "--device", "cpu", "--input-size", "64"]


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        image(folder / f"{i}.png", seed=i)
    return folder


def other_model(path: Path, seed: int = 1) -> Path:
    """Another network saved under the same model name as the tiny test model."""
    save_detector_file(DetectorCheckpoint(make_tiny_model(seed), "tiny", source="another test model"), path,
                       overwrite=True)
    return path


# ------------------------------------------------------------------------ pal fix: one run per --out


def test_a_second_fix_into_a_busy_out_is_refused_before_any_work(tmp_path, capsys, photos, tiny_detector_file):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom pal_core.locks import exclusive_lock\n"
                               f"with exclusive_lock({str(out / LOCK_NAME)!r}, 'busy'):\n"
                               "    print('held', flush=True)\n    time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["fix", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "is being written by another pal fix run" in err and "Traceback" not in err
        assert [p.name for p in out.iterdir()] == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    assert main(["fix", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--quiet"]) == 0


# ------------------------------------------------------------------------ pal fix: what a result is reused for


def test_a_rerun_with_other_settings_is_refused_not_skipped(tmp_path, capsys, photos, tiny_detector_file):
    out = tmp_path / "out"
    assert main(["fix", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--quiet"]) == 0
    before = tree_bytes(out)
    report = json.loads((out / "0.json").read_text())
    assert report["settings"]["threshold"] == 0.5 and len(report["settings"]["model_sha256"]) == 64
    capsys.readouterr()
    assert main(["fix", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--threshold", "0.3"]) == 2
    err = capsys.readouterr().err
    assert "fixed by an earlier run with other settings (threshold 0.5 -> 0.3)" in err and "--overwrite" in err
    assert tree_bytes(out) == before
    assert main(["fix", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--threshold", "0.3",
                 "--overwrite", "--quiet"]) == 0
    assert json.loads((out / "0.json").read_text())["settings"]["threshold"] == 0.3


def test_a_rerun_with_another_model_file_of_the_same_name_is_refused(tmp_path, capsys, photos, tiny_detector_file):
    out = tmp_path / "out"
    model = Path(shutil.copy(tiny_detector_file, tmp_path / "model.safetensors"))
    assert main(["fix", str(photos), "--out", str(out), *model_args(model), "--quiet"]) == 0
    before = tree_bytes(out)
    other_model(model)
    capsys.readouterr()
    assert main(["fix", str(photos), "--out", str(out), *model_args(model), "--quiet"]) == 2
    assert "other settings (model_sha256 " in capsys.readouterr().err
    assert tree_bytes(out) == before


def test_the_same_run_resumes_whether_out_is_given_relative_or_absolute(tmp_path, capsys, monkeypatch, photos,
                                                                        tiny_detector_file):
    out = tmp_path / "out"
    assert main(["fix", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--quiet"]) == 0
    before = tree_bytes(out)
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["fix", "photos", "--out", "out", *model_args(tiny_detector_file)]) == 0
    assert "2 images: 2 already fixed by an earlier run (skipped)" in capsys.readouterr().err
    assert tree_bytes(out) == before


def test_an_input_changed_since_is_fixed_again(tmp_path, capsys, photos, tiny_detector_file):
    out = tmp_path / "out"
    assert main(["fix", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--quiet"]) == 0
    old_sha = json.loads((out / "0.json").read_text())["input_sha256"]
    image(photos / "0.png", seed=7)
    capsys.readouterr()
    assert main(["fix", str(photos), "--out", str(out), *model_args(tiny_detector_file)]) == 0
    err = capsys.readouterr().err
    assert "1.png: already fixed in" in err and "1 already fixed by an earlier run (skipped)" in err
    assert "0.png: already fixed" not in err
    assert json.loads((out / "0.json").read_text())["input_sha256"] != old_sha


# ------------------------------------------------------------------------ pal rank: records of one model, PAR in 0..1


def test_rank_resumed_after_the_model_file_changed_is_refused(tmp_path, capsys, photos, tiny_detector_file):
    model = Path(shutil.copy(tiny_detector_file, tmp_path / "model.safetensors"))
    out = tmp_path / "scores.jsonl"
    assert main(["rank", str(photos / "0.png"), "--out", str(out), *model_args(model), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert len(record["model_sha256"]) == 64
    before = out.read_bytes()
    other_model(model)
    capsys.readouterr()
    assert main(["rank", str(photos), "--out", str(out), *model_args(model), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the model file changed since" in err and "Traceback" not in err
    assert out.read_bytes() == before


def test_rank_resumes_a_record_of_an_earlier_release_without_a_hash(tmp_path, capsys, photos, tiny_detector_file):
    out = tmp_path / "scores.jsonl"
    assert main(["rank", str(photos / "0.png"), "--out", str(out), *model_args(tiny_detector_file), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    del record["model_sha256"], record["rank"]
    out.write_text(json.dumps(record) + "\n")
    assert main(["rank", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--no-progress"]) == 0
    assert "1 scored" in capsys.readouterr().err and len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("par", ["-5", "7", "NaN", "Infinity"])
def test_a_record_with_a_par_outside_0_to_1_is_not_trusted(tmp_path, capsys, photos, tiny_detector_file, par):
    out = tmp_path / "scores.jsonl"
    out.write_text(f'{{"image": "{photos / "0.png"}", "par": {par}, "width": 32, "height": 24, "model": "tiny", '
                   '"threshold": 0.5, "input_size": 64}\n')
    before = out.read_bytes()
    assert main(["rank", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "is not a share from 0 to 1" in err and "Traceback" not in err
    assert out.read_bytes() == before
    assert main(["rank", "--merge", str(out), "--out", str(tmp_path / "merged.jsonl")]) == 2
    assert "not a share from 0 to 1" in capsys.readouterr().err


# ------------------------------------------------------------------------ pal detect: the same rules for its --out


def test_detect_rerun_with_another_threshold_or_model_is_refused_not_skipped(tmp_path, capsys, photos,
                                                                            tiny_detector_file):
    out = tmp_path / "out"
    model = Path(shutil.copy(tiny_detector_file, tmp_path / "model.safetensors"))
    assert main(["detect", str(photos), "--out", str(out), *model_args(model), "--quiet"]) == 0
    before = tree_bytes(out)
    capsys.readouterr()
    assert main(["detect", str(photos), "--out", str(out), *model_args(model), "--quiet"]) == 0  # same: skipped
    assert all("skipped" in json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert main(["detect", str(photos), "--out", str(out), *model_args(model), "--threshold", "0.3"]) == 2
    assert "made by an earlier run with another model, threshold" in capsys.readouterr().err
    other_model(model)
    assert main(["detect", str(photos), "--out", str(out), *model_args(model)]) == 2
    assert tree_bytes(out) == before
    assert main(["detect", str(photos), "--out", str(out), *model_args(model), "--overwrite", "--quiet"]) == 0
    assert tree_bytes(out) != before


def test_a_second_detect_into_a_busy_out_is_refused(tmp_path, capsys, photos, tiny_detector_file):
    from pal_core.cli.detect import LOCK_NAME as DETECT_LOCK
    from pal_core.locks import exclusive_lock
    out = tmp_path / "out"
    out.mkdir()
    with exclusive_lock(out / DETECT_LOCK, "busy"):  # flock: another open file description is refused too
        assert main(["detect", str(photos), "--out", str(out), *model_args(tiny_detector_file), "--quiet"]) == 2
    assert "is being written by another pal detect run" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [DETECT_LOCK]


def test_ray_columns_carry_the_model_hash_both_ways():
    from pal_core.rank.ray_ranking import columns_to_records, records_to_columns
    records = [{"image": "/a.png", "par": 0.25, "width": 4, "height": 3, "model": "tiny", "threshold": 0.5,
                "input_size": 64, "model_sha256": "ab" * 32},
               {"image": "/b.png", "error": "unreadable", "model": "tiny", "threshold": 0.5, "input_size": 64,
                "model_sha256": "ab" * 32},
               {"image": "/c.png", "par": 0.5, "width": 4, "height": 3, "model": "old", "threshold": 0.5,
                "input_size": 64}]  # a detector that came from no file: no hash
    assert columns_to_records(records_to_columns(records)) == records
