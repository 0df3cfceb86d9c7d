"""PAR score files: the append-only JSONL working record, and sorted exports (JSONL, CSV, Parquet).

The working record holds one JSON object per line, in the order images were scored:
    {"image": "/abs/a.png", "par": 0.0123, "width": 1024, "height": 768, "model": "pal_lite",
     "threshold": 0.5, "input_size": 512}
or, for a file that could not be read, {"image": ..., "error": "...", "model": ..., ...}.
Lines are written a batch at a time and fsync'd, so a crash loses at most the batch being written; a
torn last line (the crash hit mid-write) is ignored when reading and cut off before appending again.

Sorting never holds the records themselves: it reads one small key per record (PAR, a 64-bit hash of
the path, where the line starts), sorts the keys with numpy and then reads the lines in that order.
That is 24 bytes per image, about 24 MB for a million images.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..atomic import atomic_path
from ..locks import lock_handle

EXPORT_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
EXPORT_COLUMNS = ("rank", "image", "par", "width", "height", "model", "threshold", "input_size", "error")
PARQUET_ROWS_PER_GROUP = 8192


class ScoreFileError(ValueError):
    """An output path or score file that cannot be used (unknown format, settings that do not match)."""


def path_hash(image: str) -> int:
    """A stable 64-bit hash of an image path (Python's hash() changes between processes)."""
    return int.from_bytes(hashlib.blake2b(image.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def export_format(path: str | os.PathLike) -> str:
    """'jsonl', 'csv' or 'parquet' from the file name, or a ScoreFileError saying what is accepted."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise ScoreFileError(f"{path}: unknown output format {suffix or '(no suffix)'!r}; "
                             "--out must end with .jsonl, .csv or .parquet")
    return EXPORT_FORMATS[suffix]


def records_path_for(out: str | os.PathLike) -> Path:
    """Where the working record of an output lives: the .jsonl output itself, else a .records.jsonl beside it."""
    out = Path(out)
    return out if export_format(out) == "jsonl" else out.with_name(out.name + ".records.jsonl")


def require_pyarrow():
    """pyarrow's parquet module, or a clear error saying how to get it (checked before any work)."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as error:
        raise ScoreFileError(
            "writing .parquet needs pyarrow, which is not installed: pip install 'pal-nodes[parquet]' "
            "(or pip install pyarrow), or use --out scores.jsonl / scores.csv") from error
    return pyarrow, pyarrow.parquet


# ----------------------------------------------------------------------------------------------
# The working record


def repair_torn_tail(path: Path) -> int:
    """Cuts an unfinished last line (a crash mid-write) off the file; returns the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    with open(path, "rb+") as f:
        keep = _end_of_last_full_line(f, size)
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return size - keep


def _end_of_last_full_line(f, size: int, block: int = 65536) -> int:
    position = size
    while position > 0:
        start = max(0, position - block)
        f.seek(start)
        chunk = f.read(position - start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


class RecordWriter:
    """Appends records to a JSONL file, one batch per write, flushed to disk before returning."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")
        try:
            _lock_exclusively(self._file, self.path)
            self.repaired_bytes = repair_torn_tail(self.path)  # only once no other writer can be appending
        except BaseException:
            self._file.close()
            raise

    def append(self, records: Iterable[dict]) -> None:
        data = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)
        if data:
            self._file.write(data)  # one write per batch: a crash tears at most this batch
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lock_exclusively(file, path: Path) -> None:
    """Two runs appending to one record would interleave their lines: the second one is refused."""
    lock_handle(file, ScoreFileError(f"{path} is being written by another pal rank run; wait for it to finish, "
                                     "or give this run another --out (or another --shard and --out)"))


def foreign_lines(path: str | os.PathLike, most: int = 3) -> tuple[int, list[str]]:
    """Lines of a file that are not score records (a torn last line is not counted: it is repaired).

    Returns how many there are and a description of the first `most`. A run refuses such a file
    rather than sort it: sorting keeps records only, so every other line would be lost.
    """
    count, shown = 0, []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break
            if _parse_line(line) is None and line.strip():
                count += 1
                if len(shown) < most:
                    text = line.decode("utf-8", "replace").strip()
                    shown.append(f"line {number}: {text[:80]}{'...' if len(text) > 80 else ''}{_why_not_a_record(line)}")
    return count, shown


def check_record_file(path: str | os.PathLike) -> str | None:
    """Why an existing file cannot be used as a pal rank record (it holds other lines), or None."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_file():
        return f"{path} is not a file"
    try:
        count, shown = foreign_lines(path)
    except OSError as error:
        return f"{path} cannot be read ({error})"
    if count:
        return (f"{path} holds {count} lines that are not pal rank score records ({'; '.join(shown)}). It was "
                "left as it is: sorting it would drop those lines. Give another --out, or remove the lines")
    return None


@contextmanager
def record_lock(records_path: str | os.PathLike) -> Iterator[None]:
    """Held by a whole `pal rank` run, from the first read to the final sorted file: a second run on the
    same record is refused instead of appending to a file the first is about to replace.

    The lock is on `.<record name>.lock` beside the record (the record itself is replaced by its
    sorted version, a new file, so a lock on it would not hold across the replacement).
    """
    records_path = Path(records_path)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = records_path.with_name(f".{records_path.name}.lock")
    with open(lock_path, "ab") as handle:
        _lock_exclusively(handle, records_path)
        yield


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """(byte offset, record) for each complete, valid line; damaged lines are skipped."""
    offset = 0
    with open(path, "rb") as f:
        for line in f:
            start, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                break  # torn last line
            record = _parse_line(line)
            if record is not None:
                yield start, record


def _parse_line(line: bytes) -> dict | None:
    """A score record (image, and a PAR or an error), or None for any other line."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("image"), str):
        return None
    if not (isinstance(record.get("error"), str) or is_valid_par(record.get("par"))):
        return None
    return record


def is_valid_par(par: object) -> bool:
    """A PAR is a share of pixels: a number from 0 to 1 (JSON allows NaN, Infinity and anything else)."""
    return isinstance(par, (int, float)) and not isinstance(par, bool) and 0.0 <= par <= 1.0


def _why_not_a_record(line: bytes) -> str:
    """Why a line that looks like a score record is not one (a PAR out of range), else ''."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return ""
    if isinstance(record, dict) and isinstance(record.get("image"), str) and "par" in record:
        return f" (PAR {str(record['par'])[:20]} is not a share from 0 to 1)"
    return ""


def record_settings(record: dict) -> tuple:
    """What a score depends on besides the image: a resumed run must use the same (the model file's hash
    is None in records of earlier releases)."""
    sha = record.get("model_sha256")
    return record.get("model"), record.get("threshold"), record.get("input_size"), sha if isinstance(sha, str) else None


@dataclass
class ExistingScores:
    """What a working record already holds: sorted path hashes to skip, and the settings used."""

    skip_hashes: np.ndarray  # sorted uint64
    settings: set  # record_settings() of the scored records

    def has(self, key: int) -> bool:
        where = int(np.searchsorted(self.skip_hashes, np.uint64(key)))
        return where < len(self.skip_hashes) and int(self.skip_hashes[where]) == key


def read_existing(path: str | os.PathLike, retry_errors: bool = False) -> ExistingScores:
    """The images a working record has done (with `retry_errors`, failed ones count as not done)."""
    hashes, settings = array("Q"), set()
    if Path(path).exists():
        for _, record in iter_records(path):
            if "error" not in record:
                settings.add(record_settings(record))
            elif retry_errors:
                continue
            hashes.append(path_hash(record["image"]))
    return ExistingScores(np.unique(np.frombuffer(hashes, dtype=np.uint64)), settings)


# ----------------------------------------------------------------------------------------------
# Ranking: sorted by PAR from the files, without loading the records


@dataclass
class Ranking:
    """The order of the records in one or more working files: best (lowest PAR) first, errors last."""

    files: list[Path]
    file_index: np.ndarray  # which file each ranked record is in
    offsets: np.ndarray  # where its line starts
    scored: int  # the first `scored` entries have a PAR; the rest are errors

    def __len__(self) -> int:
        return len(self.offsets)

    def records(self, limit: int | None = None) -> Iterator[dict]:
        """Records in rank order, each with its 1-based "rank" (errors have rank None)."""
        handles = [open(p, "rb") for p in self.files]
        try:
            count = len(self) if limit is None else min(limit, len(self))
            for i in range(count):
                f = handles[self.file_index[i]]
                f.seek(int(self.offsets[i]))
                record = _parse_line(f.readline())
                if record is None:
                    raise ScoreFileError(f"{self.files[self.file_index[i]]} changed while it was being sorted "
                                         "(another program wrote to it); run the same command again")
                record.pop("rank", None)  # a sorted file read again: its old rank is stale
                yield {"rank": i + 1 if i < self.scored else None, **record}
        finally:
            for f in handles:
                f.close()


def rank_records(files: Iterable[str | os.PathLike]) -> Ranking:
    """Sorts the records of working files by PAR (ties by path hash, so the order never depends on
    which run or shard scored what). An image recorded more than once keeps its last record."""
    files = [Path(p) for p in files]
    pars, hashes, file_index, offsets = array("d"), array("Q"), array("H"), array("q")
    for index, path in enumerate(files):
        for offset, record in iter_records(path):
            par = record.get("par")
            pars.append(float(par) if "error" not in record and isinstance(par, (int, float)) else np.inf)
            hashes.append(path_hash(record["image"]))
            file_index.append(index)
            offsets.append(offset)
    par_key = np.frombuffer(pars, dtype=np.float64)
    hash_key = np.frombuffer(hashes, dtype=np.uint64)
    keep = _last_record_per_image(hash_key)
    order = keep[np.lexsort((hash_key[keep], par_key[keep]))]
    scored = int(np.isfinite(par_key[order]).sum())
    return Ranking(files, np.frombuffer(file_index, dtype=np.uint16)[order],
                   np.frombuffer(offsets, dtype=np.int64)[order], scored)


def _last_record_per_image(hash_key: np.ndarray) -> np.ndarray:
    """Indices of the last record of each distinct path hash (records are in the order written)."""
    if len(hash_key) == 0:
        return np.zeros(0, dtype=np.int64)
    by_hash = np.argsort(hash_key, kind="stable")  # equal hashes stay in write order
    sorted_hashes = hash_key[by_hash]
    last_of_group = np.append(sorted_hashes[1:] != sorted_hashes[:-1], True)
    return by_hash[last_of_group]


# ----------------------------------------------------------------------------------------------
# Exports, each written to a temporary file and renamed into place (a reader never sees half a file)


def export_ranking(ranking: Ranking, out: str | os.PathLike) -> Path:
    out = Path(out)
    writer = {"jsonl": _write_jsonl, "csv": _write_csv, "parquet": _write_parquet}[export_format(out)]
    with atomic_path(out) as tmp:
        writer(ranking.records(), tmp)
    return out


def _write_jsonl(records: Iterator[dict], path: Path) -> None:
    with open(path, "wb") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _write_csv(records: Iterator[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=EXPORT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            writer.writerow(record)
        f.flush()
        os.fsync(f.fileno())


def _write_parquet(records: Iterator[dict], path: Path) -> None:
    pa, pq = require_pyarrow()
    schema = pa.schema([("rank", pa.int64()), ("image", pa.string()), ("par", pa.float64()),
                        ("width", pa.int64()), ("height", pa.int64()), ("model", pa.string()),
                        ("threshold", pa.float64()), ("input_size", pa.int64()), ("error", pa.string())])
    with pq.ParquetWriter(str(path), schema) as writer:
        rows: list[dict] = []
        for record in records:
            rows.append({name: record.get(name) for name in EXPORT_COLUMNS})
            if len(rows) == PARQUET_ROWS_PER_GROUP:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def read_export(path: str | os.PathLike) -> list[dict]:
    """An export's rows (for tests and small files): JSONL and CSV without extra packages."""
    path = Path(path)
    kind = export_format(path)
    if kind == "jsonl":
        return [record for _, record in iter_records(path)]
    if kind == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(io.StringIO(f.read())))
    _, pq = require_pyarrow()
    return pq.read_table(str(path)).to_pylist()
