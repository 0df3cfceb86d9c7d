"""`pal rank` and pal_core.rank.ranking / scores / selection: resume, crash safety, order, shards, outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pal_core.cli import main
from pal_core.rank.ranking import (ImageEntry, RankSettings, batches_by_size, decode_in_background, iter_image_entries,
                                   parse_shard, rank_images, shard_of)
from pal_core.rank.scores import (RecordWriter, ScoreFileError, export_ranking, iter_records, rank_records, read_export,
                                  records_path_for, repair_torn_tail)
from pal_core.rank.selection import SheetLayout, contact_sheet, copy_best, select_best



class BrightnessDetector:
    """Stands in for a Detector with a known answer: PAR = the image's mean brightness.

    Counts its calls and the images it saw; `fail_after` batches it raises, like a crash mid-run.
    """

    input_size = 64

    def __init__(self, name: str = "bright", fail_after: int | None = None):
        self.name = name
        self.fail_after = fail_after
        self.calls = 0
        self.seen: list[tuple] = []

    def par(self, images, threshold=0.5):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        self.seen += [tuple(i.shape) for i in images]
        return torch.tensor([float(i.mean()) for i in images])

    def mask(self, images, threshold=0.5):
        return [i.mean(-1) > threshold for i in images]


def grey_image(path: Path, level: int, size=(24, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), level, dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Ten grey images whose brightness (so PAR for BrightnessDetector) is known, two sizes, one corrupt file."""
    root = tmp_path / "images"
    for i in range(10):
        level = [200, 20, 120, 60, 240, 100, 0, 180, 40, 160][i]
        grey_image(root / ("deep" if i % 2 else "") / f"img{i}.png", level, (24, 32) if i % 3 else (40, 20))
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "notes.txt").write_text("not an image")
    return root


def scored_records(path: Path) -> list[dict]:
    return [r for _, r in iter_records(path)]


SETTINGS = RankSettings(batch_size=4, workers=2)
PINNED_SHARDS = [2, 2, 0, 1, 0, 3, 0, 0]  # blake2b-64 of the key, mod 4


def test_scores_every_image_and_records_unreadable_ones(folder, tmp_path):
    records_file = tmp_path / "scores.jsonl"
    summary = rank_images(BrightnessDetector(), [str(folder)], records_file, SETTINGS)
    assert (summary.scored, summary.failed) == (10, 1)
    records = {Path(r["image"]).name: r for r in scored_records(records_file)}
    assert set(records) == {f"img{i}.png" for i in range(10)} | {"corrupt.png"}  # notes.txt is not an image
    assert "corrupt.png" in records["corrupt.png"]["error"] and "par" not in records["corrupt.png"]
    assert records["img4.png"]["par"] == pytest.approx(240 / 255, abs=1e-6)
    assert (records["img0.png"]["width"], records["img0.png"]["height"]) == (20, 40)
    assert records["img1.png"]["model"] == "bright" and Path(records["img1.png"]["image"]).is_absolute()


def test_overlapping_arguments_score_each_image_once(folder, tmp_path):
    records_file = tmp_path / "scores.jsonl"
    detector = BrightnessDetector()
    summary = rank_images(detector, [str(folder), str(folder / "deep" / "*.png"), str(folder / "img0.png")],
                          records_file, SETTINGS)
    assert summary.scored == len(detector.seen) == 10
    assert len(scored_records(records_file)) == 11


def test_resume_scores_only_what_is_new(folder, tmp_path):
    records_file = tmp_path / "scores.jsonl"
    rank_images(BrightnessDetector(), [str(folder)], records_file, SETTINGS)
    again = BrightnessDetector()
    summary = rank_images(again, [str(folder)], records_file, SETTINGS)
    assert again.calls == 0 and summary.skipped == 11  # the corrupt file is not retried by default
    grey_image(folder / "new" / "a.png", 10)
    grey_image(folder / "new" / "b.png", 30)
    later = BrightnessDetector()
    summary = rank_images(later, [str(folder)], records_file, SETTINGS)
    assert summary.scored == 2 and len(later.seen) == 2
    retry = BrightnessDetector()
    assert rank_images(retry, [str(folder)], records_file,
                       RankSettings(batch_size=4, retry_errors=True)).failed == 1
    assert retry.calls == 0  # only the corrupt file was attempted, and it never reaches the network
    assert len(scored_records(records_file)) == 14


def test_crash_loses_at_most_the_batch_in_flight(folder, tmp_path):
    records_file = tmp_path / "scores.jsonl"
    with pytest.raises(RuntimeError, match="simulated crash"):
        rank_images(BrightnessDetector(fail_after=2), [str(folder)], records_file, SETTINGS)
    assert len(scored_records(records_file)) == 2 * SETTINGS.batch_size  # both finished batches kept
    resumed = BrightnessDetector()
    summary = rank_images(resumed, [str(folder)], records_file, SETTINGS)
    assert summary.skipped == 2 * SETTINGS.batch_size
    assert summary.scored + summary.failed == 11 - 2 * SETTINGS.batch_size  # only the rest is attempted
    assert len(resumed.seen) == summary.scored
    names = [Path(r["image"]).name for r in scored_records(records_file)]
    assert sorted(names) == sorted(set(names)) and len(names) == 11


def test_torn_last_line_is_ignored_then_cut_off(tmp_path):
    records_file = tmp_path / "scores.jsonl"
    with RecordWriter(records_file) as writer:
        writer.append([{"image": "/a.png", "par": 0.5}, {"image": "/b.png", "par": 0.1}])
    with open(records_file, "ab") as f:
        f.write(b'{"image": "/c.png", "pa')  # a crash in the middle of a write
    assert [r["image"] for r in scored_records(records_file)] == ["/a.png", "/b.png"]
    assert len(rank_records([records_file])) == 2
    with RecordWriter(records_file) as writer:
        assert writer.repaired_bytes == len(b'{"image": "/c.png", "pa')
        writer.append([{"image": "/c.png", "par": 0.3}])
    assert [json.loads(line)["image"] for line in records_file.read_text().splitlines()] == ["/a.png", "/b.png", "/c.png"]
    assert repair_torn_tail(records_file) == 0


def test_a_second_writer_on_one_record_is_refused(tmp_path):
    records_file = tmp_path / "scores.jsonl"
    with RecordWriter(records_file) as writer:
        with pytest.raises(ScoreFileError, match="another pal rank run"):
            RecordWriter(records_file)
        writer.append([{"image": "/a.png", "par": 0.5}])
    with RecordWriter(records_file) as writer:  # free again once the first one closed
        writer.append([{"image": "/b.png", "par": 0.5}])
    assert len(scored_records(records_file)) == 2


def test_ranking_sorts_best_first_errors_last_and_keeps_the_last_record(tmp_path):
    records_file = tmp_path / "scores.jsonl"
    with RecordWriter(records_file) as writer:
        writer.append([{"image": "/x.png", "par": 0.9}, {"image": "/bad.png", "error": "broken"},
                       {"image": "/y.png", "par": 0.2}, {"image": "/z.png", "par": 0.5}])
        writer.append([{"image": "/x.png", "par": 0.1}])  # scored again later (e.g. another shard's file)
    ranking = rank_records([records_file])
    ranked = list(ranking.records())
    assert [(r["rank"], r["image"]) for r in ranked] == [(1, "/x.png"), (2, "/y.png"), (3, "/z.png"), (None, "/bad.png")]
    assert ranking.scored == 3
    assert [r["image"] for r in select_best(ranking, top_k=2)] == ["/x.png", "/y.png"]
    assert [r["image"] for r in select_best(ranking, max_par=0.3)] == ["/x.png", "/y.png"]
    assert [r["image"] for r in select_best(ranking, top_k=1, max_par=0.3)] == ["/x.png"]
    csv_rows = read_export(export_ranking(ranking, tmp_path / "sorted.csv"))
    assert [(row["rank"], row["image"], row["par"]) for row in csv_rows][:2] == [("1", "/x.png", "0.1"), ("2", "/y.png", "0.2")]
    assert csv_rows[-1]["error"] == "broken" and csv_rows[-1]["rank"] == ""


def test_resume_refuses_scores_from_another_model(folder, tmp_path):
    records_file = tmp_path / "scores.jsonl"
    rank_images(BrightnessDetector("model-a"), [str(folder)], records_file, SETTINGS)
    other = BrightnessDetector("model-b")
    with pytest.raises(ScoreFileError, match="model-a"):
        rank_images(other, [str(folder)], records_file, SETTINGS)
    assert other.calls == 0


def test_shards_partition_the_images_stably(folder, tmp_path):
    entries = list(iter_image_entries([str(folder)]))
    owners = [shard_of(e.shard_key, 3) for e in entries]
    assert set(owners) <= {0, 1, 2} and len(set(owners)) > 1
    # the same split for the data mounted elsewhere
    moved = tmp_path / "elsewhere"
    folder.rename(moved)
    assert [shard_of(e.shard_key, 3) for e in iter_image_entries([str(moved)])] == owners
    # pinned (so also the same in every process, unlike hash()): a new version must not move images
    # between the shards of a run that is under way
    assert [shard_of(f"batch/{i:03d}.png", 4) for i in range(8)] == PINNED_SHARDS

    full = BrightnessDetector()
    parts = []
    for index in range(3):
        part = tmp_path / f"shard{index}.jsonl"
        rank_images(full, [str(moved)], part, RankSettings(batch_size=4, shard=(index, 3)))
        parts.append({r["image"] for r in scored_records(part)})
    assert sum(map(len, parts)) == len(set().union(*parts)) == 11  # disjoint, and together everything
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_decoding_stays_a_bounded_window_ahead(folder):
    pulled = []

    def entries():
        for entry in iter_image_entries([str(folder)]):
            pulled.append(entry)
            yield entry

    consumed = 0
    for item in decode_in_background(entries(), workers=2, window=3):
        consumed += 1
        assert len(pulled) - consumed <= 3  # never more than the window decoded ahead
    assert consumed == len(pulled) == 11


def test_native_size_batches_hold_one_size(folder):
    decoded = list(decode_in_background(iter_image_entries([str(folder)]), workers=0, window=1))
    batches = list(batches_by_size(decoded, batch_size=3, same_size=True))
    assert sorted(len(item) for b in batches for item in [b]) and sum(map(len, batches)) == 11
    for batch in batches:
        sizes = {tuple(item.image.shape) for item in batch if item.image is not None}
        assert len(sizes) <= 1 and len(batch) <= 3
    mixed = list(batches_by_size(decoded, batch_size=4, same_size=False))
    assert [len(b) for b in mixed] == [4, 4, 3]


def test_copy_best_never_overwrites(tmp_path):
    sources = []
    for i in range(3):
        sources.append(tmp_path / "src" / f"s{i}.png")
        grey_image(sources[-1], 50 * i)
    records = [{"rank": i + 1, "image": str(p), "par": 0.1 * i} for i, p in enumerate(sources)]
    target = tmp_path / "best"
    target.mkdir()
    (target / "000002_s1.png").write_bytes(b"keep me")
    report = copy_best(records, target)
    assert [p.name for p in report.copied] == ["000001_s0.png", "000003_s2.png"]
    assert [p.name for p in report.existing] == ["000002_s1.png"]
    assert (target / "000002_s1.png").read_bytes() == b"keep me"
    assert (target / "000001_s0.png").read_bytes() == sources[0].read_bytes()
    assert copy_best(records, target).copied == []  # a second run copies nothing
    assert sorted(p.name for p in target.iterdir()) == ["000001_s0.png", "000002_s1.png", "000003_s2.png"]


def test_contact_sheet_layout(tmp_path):
    records = []
    for i in range(5):
        path = tmp_path / f"c{i}.png"
        grey_image(path, 250 if i == 0 else 10, (30, 60))
        records.append({"rank": i + 1, "image": str(path), "par": 0.01 * i})
    layout = SheetLayout(columns=3, thumb=40, caption=16, gap=6)
    sheet = contact_sheet(BrightnessDetector(), records, 0.5, layout)
    assert sheet.shape == (2 * (40 + 16) + 3 * 6, 3 * 40 + 4 * 6, 3)
    first = sheet[6 + 20, 6 + 20]  # middle of the first thumbnail: a bright image tinted magenta
    assert first[1] < first[0] - 40 and first[1] < first[2] - 40
    second = sheet[6 + 20, 6 + 46 + 20]  # a dark image, no artifact: stays grey
    assert abs(int(second[0]) - int(second[1])) <= 2


def test_cli_rank_end_to_end(folder, tmp_path, tiny_detector_file, capsys):
    out = tmp_path / "scores.csv"
    # at 0.55 the tiny random network's PARs differ between these images (at 0.5 all are 1.0)
    argv = ["rank", str(folder), "--model", tiny_detector_file, "--device", "cpu", "--input-size", "64", "--threshold", "0.55",
            "--out", str(out), "--top-k", "3", "--copy-best", str(tmp_path / "best"),
            "--sheet", str(tmp_path / "sheet.png"), "--no-progress", "--batch-size", "4"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = read_export(out)
    assert len(rows) == 11 and rows[-1]["error"] and rows[0]["model"] == "tiny"
    pars = [float(r["par"]) for r in rows[:-1]]
    assert pars == sorted(pars) and len(set(pars)) >= 4
    selected = [json.loads(line) for line in captured.out.splitlines()]
    assert [s["image"] for s in selected] == [r["image"] for r in rows[:3]]
    assert len(list((tmp_path / "best").iterdir())) == 3
    assert Image.open(tmp_path / "sheet.png").size == SheetLayout().size(3)
    assert records_path_for(out).is_file()
    # the same command again: nothing to score, and the sheet is refused before any work
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    argv_again = [a for a in argv if a not in ("--sheet", str(tmp_path / "sheet.png"))]
    assert main(argv_again) == 1  # the copies exist already: left alone, said so
    err = capsys.readouterr().err
    assert "0 scored" in err and "11 already in" in err and "left as they are" in err


def test_cli_jsonl_output_is_the_record_sorted_in_place(folder, tmp_path, tiny_detector_file, capsys):
    out = tmp_path / "scores.jsonl"
    argv = ["rank", str(folder), "--model", tiny_detector_file, "--device", "cpu", "--input-size", "64",
            "--threshold", "0.55", "--out", str(out), "--top-k", "2", "--no-progress"]
    assert main(argv) == 0
    rows = read_export(out)
    selected = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert selected == rows[:2] and [r["rank"] for r in rows] == [*range(1, 11), None]
    assert main(argv) == 0  # resumed from the sorted file: nothing new, same result
    assert read_export(out) == rows and "0 scored" in capsys.readouterr().err


def test_cli_merges_shard_records(folder, tmp_path, tiny_detector_file, capsys):
    common = [str(folder), "--model", tiny_detector_file, "--device", "cpu", "--input-size", "64", "--no-progress"]
    for index in range(2):
        assert main(["rank", *common, "--shard", f"{index}/2", "--out", str(tmp_path / f"s{index}.jsonl")]) == 0
    merged = tmp_path / "all.jsonl"
    assert main(["rank", "--merge", str(tmp_path / "s0.jsonl"), str(tmp_path / "s1.jsonl"), "--out", str(merged)]) == 0
    rows = read_export(merged)
    assert len(rows) == 11 and [r["rank"] for r in rows] == [*range(1, 11), None]


def test_cli_rejects_bad_arguments_before_any_work(tmp_path, capsys, monkeypatch, folder):
    assert main(["rank", str(tmp_path / "missing"), "--out", str(tmp_path / "x.txt"), "--copy-best", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and ".jsonl, .csv or .parquet" in err and "--copy-best needs" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["rank", str(folder), "--ray", "local"]) == 2
    assert "pip install 'pal-nodes[ray]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    assert main(["rank", str(folder), "--out", str(tmp_path / "s.parquet")]) == 2
    assert "pip install 'pal-nodes[parquet]'" in capsys.readouterr().err
    assert main(["rank", "--merge", str(tmp_path / "s.csv"), "--out", str(tmp_path / "all.csv")]) == 2
    assert "--merge takes JSONL record files" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet.records.jsonl").exists()


def test_parquet_export(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    records_file = tmp_path / "r.jsonl"
    with RecordWriter(records_file) as writer:
        writer.append([{"image": "/a.png", "par": 0.4, "width": 3, "height": 2}, {"image": "/b.png", "par": 0.1}])
    rows = pq.read_table(str(export_ranking(rank_records([records_file]), tmp_path / "s.parquet"))).to_pylist()
    assert [(r["rank"], r["image"]) for r in rows] == [(1, "/b.png"), (2, "/a.png")] and rows[1]["width"] == 3


def test_ray_engine_gives_the_same_records(folder, tmp_path, tiny_detector_file):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from pal_core import load_detector
    from pal_core.rank.ray_ranking import rank_with_ray

    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    settings = RankSettings(batch_size=4, threshold=0.55)  # PARs that differ between the images
    rank_images(load_detector(tiny_detector_file, device="cpu", input_size=64), [str(folder)], local, settings)
    try:
        summary = rank_with_ray([str(folder)], on_ray, tiny_detector_file, settings, device="cpu", input_size=64)
        assert (summary.scored, summary.failed) == (10, 1)
        by_image = {r["image"]: r for r in scored_records(local)}
        for record in scored_records(on_ray):
            expected = by_image.pop(record["image"])
            assert record.keys() == expected.keys()
            if "par" in record:
                assert record["par"] == pytest.approx(expected["par"], abs=1e-6)
        assert not by_image  # every image, once
        assert len({r.get("par") for r in scored_records(on_ray)}) >= 4
        again = rank_with_ray([str(folder)], on_ray, tiny_detector_file, settings, device="cpu", input_size=64)
        assert again.skipped == 11 and again.scored == 0
    finally:
        ray.shutdown()


def test_rank_settings_check_themselves_and_the_cli_reports_every_problem(capsys, tmp_path):
    with pytest.raises(ValueError, match="threshold must be a probability in \\[0, 1\\), not 1.5; batch size must "
                                         "be at least 1, not 0; workers must be 0 or more, not -1; shard 3/2"):
        RankSettings(batch_size=0, workers=-1, threshold=1.5, shard=(3, 2))
    assert main(["rank", str(tmp_path), "--threshold", "1.5", "--batch-size", "0", "--out",
                 str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "threshold must be a probability in [0, 1), not 1.5" in err and "batch size must be at least 1" in err
    assert not (tmp_path / "s.jsonl").exists()
