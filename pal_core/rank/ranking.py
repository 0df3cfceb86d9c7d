"""Scoring whole folders by PAR: streaming, resumable, split into shards by a stable hash of paths.

Paths are listed lazily (folders walked in sorted order, one directory at a time), images are decoded
in background threads while the network runs (Pillow releases the GIL while decoding, and threads
share decoded images without copying them between processes), results are appended to a JSONL
working record after every batch. Memory holds a bounded window of decoded images and one 8-byte
hash per already-scored image, however many images there are.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from itertools import takewhile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from ..detect.masks import DEFAULT_THRESHOLD, check_threshold
from ..hub.fingerprint import model_sha256
from ..imageio import IMAGE_SUFFIXES, ImageReadError, read_image
from .scores import ExistingScores, RecordWriter, ScoreFileError, path_hash, read_existing
from .selection import NOT_FINITE

GLOB_CHARACTERS = set("*?[")


# ----------------------------------------------------------------------------------------------
# Inputs and shards


@dataclass(frozen=True)
class ImageEntry:
    """An image to score. `path`: absolute, the key of its record. `shard_key`: the path relative to
    the folder argument it was found in (or as given), so machines that mount the data at different
    places still agree on which shard owns it."""

    path: str
    shard_key: str


def check_inputs(inputs: Iterable[str]) -> list[str]:
    """Problems with path arguments, found before any work: a name that matches nothing."""
    problems = []
    for item in inputs:
        if os.path.exists(item):
            continue
        if GLOB_CHARACTERS & set(item):
            if next(iter_glob(item), None) is None:
                problems.append(f"{item}: no file matches this pattern")
        else:
            problems.append(f"{item}: no such file or folder")
    return problems


def iter_image_entries(inputs: Iterable[str]) -> Iterator[ImageEntry]:
    """Files as given, image files in folders (recursive, sorted) and files matching glob patterns."""
    for item in inputs:
        if os.path.isdir(item):
            yield from _walk_folder(item)
        elif os.path.exists(item) or not (GLOB_CHARACTERS & set(item)):
            yield ImageEntry(os.path.abspath(item), Path(item).as_posix())  # a missing file: recorded as an error
        else:
            for match in iter_glob(item):
                if Path(match).suffix.lower() in IMAGE_SUFFIXES:
                    yield ImageEntry(os.path.abspath(match), Path(match).as_posix())


def iter_glob(pattern: str) -> Iterator[str]:
    """Files matching a glob pattern (`**`: any depth), in sorted order.

    Unlike glob.glob, links to folders are not followed, so a link loop (a -> ..) cannot make the
    walk endless; the folder walked is the pattern's part before its first wildcard.
    """
    parts = Path(pattern).parts
    fixed = list(takewhile(lambda part: not GLOB_CHARACTERS & set(part), parts))
    wild = parts[len(fixed):]
    base = os.path.join(*fixed) if fixed else "."
    if not wild or not os.path.isdir(base):
        return
    for folder, subfolders, files in os.walk(base):  # followlinks=False
        subfolders.sort()
        relative = Path(os.path.relpath(folder, base)).parts if folder != base else ()
        for name in sorted(files):
            if _glob_matches(wild, (*relative, name)):
                yield os.path.join(folder, name) if fixed else os.path.relpath(os.path.join(folder, name))


def _glob_matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Path components against pattern components; `**` stands for any number of folders."""
    def closure(states: set[int]) -> set[int]:
        todo, seen = list(states), set(states)
        while todo:
            state = todo.pop()
            if state < len(pattern) and pattern[state] == "**" and state + 1 not in seen:
                seen.add(state + 1)
                todo.append(state + 1)
        return seen

    states = closure({0})
    for part in parts:
        following = set()
        for state in states:
            if state == len(pattern):
                continue
            if pattern[state] == "**":
                if not part.startswith("."):
                    following.add(state)
            elif fnmatchcase(part, pattern[state]) and (pattern[state].startswith(".") or not part.startswith(".")):
                following.add(state + 1)
        states = closure(following)
        if not states:
            return False
    return len(pattern) in states


def _walk_folder(root: str) -> Iterator[ImageEntry]:
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()  # walk in a reproducible order
        for name in sorted(files):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                path = os.path.join(folder, name)
                yield ImageEntry(os.path.abspath(path), Path(os.path.relpath(path, root)).as_posix())


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), with 0 <= I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 0/4 for the first of four shards), not {text!r}")
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: needs N >= 1 and 0 <= I < N (shards are numbered from 0)")
    return index, count


def shard_of(shard_key: str, count: int) -> int:
    """Which of `count` shards owns a path: a hash of its bytes, the same on every machine and run."""
    return path_hash(shard_key) % count


# ----------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class RankSettings:
    batch_size: int = 8
    workers: int = 2  # decoding threads; 0 decodes in the calling thread
    threshold: float = DEFAULT_THRESHOLD
    shard: tuple[int, int] = (0, 1)
    retry_errors: bool = False  # score images whose earlier attempt failed again

    def __post_init__(self):
        problems = []
        try:
            check_threshold(self.threshold)
        except ValueError as error:
            problems.append(str(error))
        if self.batch_size < 1:
            problems.append(f"batch size must be at least 1, not {self.batch_size}")
        if self.workers < 0:
            problems.append(f"workers must be 0 or more, not {self.workers}")
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            problems.append(f"shard {index}/{count}: needs N >= 1 and 0 <= I < N (shards are numbered from 0)")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class RankSummary:
    scored: int = 0  # in this run
    failed: int = 0  # in this run
    skipped: int = 0  # already in the record
    other_shards: int = 0
    repaired_bytes: int = 0  # torn tail cut off the record
    errors: list[str] = field(default_factory=list)  # the first few, to show

    def add(self, records: list[dict]) -> None:
        """Counts a batch of records just written."""
        for record in records:
            if "error" in record:
                self.failed += 1
                if len(self.errors) < 10:
                    self.errors.append(record["error"])
            else:
                self.scored += 1


def detector_settings(detector, threshold: float) -> tuple:
    """The settings tuple a record of this detector would carry (see scores.record_settings)."""
    return detector.name, threshold, getattr(detector, "input_size", None), model_sha256(detector)


def _same_settings(recorded: tuple, settings: tuple) -> bool:
    """Equal settings; a record of an earlier release carries no model hash, and is judged without it."""
    return recorded[:3] == settings[:3] and (recorded[3] is None or recorded[3] == settings[3])


def check_resumable(existing: ExistingScores, settings: tuple, records_path: Path) -> None:
    """A record made with another model or threshold cannot be continued: the scores would not compare."""
    others = [recorded for recorded in existing.settings if not _same_settings(recorded, settings)]
    if others:
        model, threshold, size, sha = sorted(others, key=repr)[0]
        if (model, threshold, size) == settings[:3]:
            raise ScoreFileError(
                f"{records_path} holds scores from another file of model {model!r} (sha256 {str(sha)[:12]}..., this "
                f"run's is {str(settings[3])[:12]}...): the model file changed since, and scores of two models do "
                "not compare. Use another --out, or delete the old record to score everything again")
        raise ScoreFileError(
            f"{records_path} holds scores from model {model!r} (threshold {threshold}, input size {size}), "
            f"but this run uses model {settings[0]!r} (threshold {settings[1]}, input size {settings[2]}); "
            "scores from different settings do not compare. Use another --out, or the same settings")


def pending_entries(inputs: list[str], existing: ExistingScores, shard: tuple[int, int],
                    summary: RankSummary) -> Iterator[ImageEntry]:
    """The entries of this shard that the record does not have yet (counting the others in `summary`)."""
    index, count = shard
    # Overlapping arguments (a folder and a pattern inside it) would list an image twice. One folder
    # never does, so only several arguments pay for remembering what this run has listed.
    listed: set[int] | None = set() if len(inputs) > 1 else None
    for entry in iter_image_entries(inputs):
        key = path_hash(entry.path)
        if count > 1 and shard_of(entry.shard_key, count) != index:
            summary.other_shards += 1
        elif existing.has(key):
            summary.skipped += 1
        elif listed is None or key not in listed:
            if listed is not None:
                listed.add(key)
            yield entry


def count_pending(inputs: list[str], existing: ExistingScores, shard: tuple[int, int]) -> int:
    """How many images this run will score (a listing pass without decoding), for the progress bar."""
    return sum(1 for _ in pending_entries(inputs, existing, shard, RankSummary()))


@dataclass
class Decoded:
    entry: ImageEntry
    image: torch.Tensor | None
    error: str | None


def decode_entry(entry: ImageEntry) -> Decoded:
    """The decoded image, or the reason it could not be read (never raises for a bad file)."""
    try:
        return Decoded(entry, read_image(entry.path), None)
    except ImageReadError as error:
        return Decoded(entry, None, str(error))
    except MemoryError as error:  # a file within the pixel limit that still did not fit: record it, go on
        return Decoded(entry, None, f"{entry.path}: {type(error).__name__}: {error}")


def decode_in_background(entries: Iterator[ImageEntry], workers: int, window: int) -> Iterator[Decoded]:
    """Decoded images in input order, at most `window` of them decoded ahead of the consumer."""
    if workers == 0:
        yield from map(decode_entry, entries)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pal-decode") as pool:
        in_flight: deque[Future] = deque()
        try:
            for entry in entries:
                in_flight.append(pool.submit(decode_entry, entry))
                if len(in_flight) >= window:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:  # stopped early (Ctrl-C, a crash): drop what was not started
            for future in in_flight:
                future.cancel()


def batches_by_size(decoded: Iterable[Decoded], batch_size: int, same_size: bool) -> Iterator[list[Decoded]]:
    """Groups images into batches; with `same_size`, only images of one size go together (a detector
    that runs at each image's own size), and a size bucket is flushed early when too many wait."""
    buckets: dict[tuple, list[Decoded]] = {}
    waiting = 0
    for item in decoded:
        key = tuple(item.image.shape[:2]) if same_size and item.image is not None else ()
        bucket = buckets.setdefault(key, [])
        bucket.append(item)
        waiting += 1
        if len(bucket) == batch_size:
            waiting -= len(bucket)
            yield buckets.pop(key)
        elif waiting > 4 * batch_size:  # many sizes: bound the memory held in partial buckets
            fullest = max(buckets, key=lambda k: len(buckets[k]))
            waiting -= len(buckets[fullest])
            yield buckets.pop(fullest)
    yield from (bucket for bucket in buckets.values() if bucket)


def score_batch(detector, batch: list[Decoded], threshold: float) -> list[dict]:
    """The records of one batch: PAR and size for decoded images, the error for the others."""
    model, _, input_size, sha = detector_settings(detector, threshold)
    common = {"model": model, "threshold": threshold, "input_size": input_size}
    if sha is not None:
        common["model_sha256"] = sha
    readable = [item for item in batch if item.image is not None]
    pars = detector.par([item.image for item in readable], threshold).tolist() if readable else []
    par_of = {id(item): par for item, par in zip(readable, pars)}
    records = []
    for item in batch:
        if item.image is None:
            records.append({"image": item.entry.path, "error": item.error, **common})
        elif par_of[id(item)] != par_of[id(item)]:  # NaN: the image had non-finite pixels
            records.append({"image": item.entry.path, "error": f"{item.entry.path}: {NOT_FINITE}", **common})
        else:
            height, width = item.image.shape[:2]
            records.append({"image": item.entry.path, "par": round(par_of[id(item)], 8),
                            "width": int(width), "height": int(height), **common})
    return records


def rank_images(detector, inputs: list[str], records_path: str | os.PathLike,
                settings: RankSettings = RankSettings(), progress: Callable[[int], None] | None = None,
                on_total: Callable[[int], None] | None = None) -> RankSummary:
    """Scores the images in `inputs` that `records_path` does not hold yet, appending their records.

    `detector`: a pal_core Detector (anything with `.name`, `.input_size` and `.par(list, threshold)`).
    `progress(n)` is called after each batch with the number of images it held; `on_total(n)`, when
    given, first gets the number of images to score (one more listing pass). An exception (or Ctrl-C)
    leaves every batch finished before it on disk.
    """
    records_path = Path(records_path)
    existing = read_existing(records_path, settings.retry_errors)
    check_resumable(existing, detector_settings(detector, settings.threshold), records_path)
    if on_total is not None:
        on_total(count_pending(inputs, existing, settings.shard))
    summary = RankSummary()
    entries = pending_entries(inputs, existing, settings.shard, summary)
    window = max(2 * settings.batch_size, 4 * max(settings.workers, 1))
    decoded = decode_in_background(entries, settings.workers, window)
    same_size = getattr(detector, "input_size", 512) is None
    try:
        with RecordWriter(records_path) as writer:
            summary.repaired_bytes = writer.repaired_bytes
            for batch in batches_by_size(decoded, settings.batch_size, same_size):
                records = score_batch(detector, batch, settings.threshold)
                writer.append(records)
                summary.add(records)
                if progress is not None:
                    progress(len(records))
    finally:
        decoded.close()  # stop the decoding threads now, not whenever the traceback is freed
    return summary


__all__ = [
    "ImageEntry", "RankSettings", "RankSummary", "batches_by_size", "check_inputs",
    "count_pending", "decode_entry", "decode_in_background", "iter_image_entries", "parse_shard", "rank_images",
    "shard_of",
]
