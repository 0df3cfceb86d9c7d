"""PAR scoring on a Ray cluster: the same Detector inside Ray Data's `map_batches` (optional extra [ray]).

Each Ray actor loads the detector once and scores batches of image paths; the driver appends the
results to the same JSONL working record as `rank_images`, a batch at a time, so resuming, sorting and
exports work unchanged. Use it from Python:

    import ray
    from pal_core.rank.ray_ranking import ParScorer
    ds = ray.data.from_items([{"image": p} for p in paths])
    scored = ds.map_batches(ParScorer, fn_constructor_kwargs={"model": "pal_lite", "device": "cuda"},
                            batch_size=32, compute=ray.data.ActorPoolStrategy(size=8), num_gpus=1)
    scored.write_parquet("s3://bucket/scores/")      # or iterate, as rank_with_ray does

or `pal rank --ray auto PATH... --out scores.jsonl` (a running cluster) / `--ray local` (this machine).
Image paths must be readable from every worker (a shared filesystem).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..detect.masks import DEFAULT_THRESHOLD
from ..hub.loading import MODEL_INPUT_SIZE, load_detector
from .ranking import (ImageEntry, RankSettings, RankSummary, check_resumable, decode_entry, detector_settings,
                      pending_entries, score_batch)
from .scores import RecordWriter, read_existing

COLUMNS = ("image", "par", "width", "height", "model", "threshold", "input_size", "error")


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError("the Ray engine needs Ray Data: pip install 'pal-nodes[ray]' "
                          "(or pip install 'ray[data]'); without Ray, split the work with --shard I/N") from error
    return ray


class ParScorer:
    """A Ray Data callable class: {"image": paths} -> the columns of score records.

    Errors are data, not exceptions, so one unreadable file does not fail the whole Ray job: an
    unreadable image has par NaN, width and height 0 and its message in "error" ("" otherwise).
    """

    def __init__(self, model: str | None = None, device: str | None = None, dtype: str | None = "auto",
                 input_size: int | None | str = MODEL_INPUT_SIZE, threshold: float = DEFAULT_THRESHOLD, batch_size: int = 8,
                 trust_code: bool = False):
        self.detector = load_detector(model, device=device, dtype=dtype, input_size=input_size,
                                      batch_size=batch_size, trust_code=trust_code)
        self.threshold = threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = [decode_entry(ImageEntry(str(path), str(path))) for path in batch["image"]]
        return records_to_columns(score_batch(self.detector, decoded, self.threshold))


def records_to_columns(records: list[dict]) -> dict[str, np.ndarray]:
    def column(name, missing, dtype):
        return np.array([missing if r.get(name) is None else r[name] for r in records], dtype=dtype)

    return {"image": column("image", "", object), "par": column("par", math.nan, np.float64),
            "width": column("width", 0, np.int64), "height": column("height", 0, np.int64),
            "model": column("model", "", object), "threshold": column("threshold", math.nan, np.float64),
            "input_size": column("input_size", 0, np.int64), "error": column("error", "", object),
            "model_sha256": column("model_sha256", "", object)}


def columns_to_records(batch: dict[str, np.ndarray]) -> list[dict]:
    """The inverse of records_to_columns: the records the working file holds."""
    records = []
    for i in range(len(batch["image"])):
        common = {"model": str(batch["model"][i]), "threshold": float(batch["threshold"][i]),
                  "input_size": int(batch["input_size"][i]) or None}
        if "model_sha256" in batch and batch["model_sha256"][i]:
            common["model_sha256"] = str(batch["model_sha256"][i])
        if batch["error"][i]:
            records.append({"image": str(batch["image"][i]), "error": str(batch["error"][i]), **common})
        else:
            records.append({"image": str(batch["image"][i]), "par": float(batch["par"][i]),
                            "width": int(batch["width"][i]), "height": int(batch["height"][i]), **common})
    return records


def rank_with_ray(inputs: list[str], records_path: str | os.PathLike, model: str | None = None,
                  settings: RankSettings = RankSettings(), device: str | None = None, dtype: str | None = "auto",
                  input_size: int | None | str = MODEL_INPUT_SIZE, trust_code: bool = False, actors: int = 1,
                  gpus_per_actor: float = 0,
                  address: str | None = None, progress: Callable[[int], None] | None = None,
                  on_total: Callable[[int], None] | None = None) -> RankSummary:
    """`rank_images` with the scoring spread over Ray actors; same record file, same resume rules.

    The driver lists the pending paths (about 100 bytes each, handed to Ray's object store) and
    writes the results; actors decode and score. `address`: None starts or joins a local Ray.
    """
    ray = require_ray()
    records_path = Path(records_path)
    existing = read_existing(records_path, settings.retry_errors)
    probe = load_detector(model, device="cpu", input_size=input_size, trust_code=trust_code)  # its name, for the resume check
    check_resumable(existing, detector_settings(probe, settings.threshold), records_path)
    del probe
    summary = RankSummary()
    paths = [{"image": entry.path} for entry in pending_entries(inputs, existing, settings.shard, summary)]
    if on_total is not None:
        on_total(len(paths))
    if not paths:
        return summary
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    scored = ray.data.from_items(paths).map_batches(
        ParScorer, batch_size=settings.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=gpus_per_actor,
        fn_constructor_kwargs={"model": model, "device": device, "dtype": dtype, "input_size": input_size,
                               "trust_code": trust_code,
                               "threshold": settings.threshold, "batch_size": settings.batch_size})
    with RecordWriter(records_path) as writer:
        summary.repaired_bytes = writer.repaired_bytes
        for batch in scored.iter_batches(batch_size=settings.batch_size, batch_format="numpy"):
            records = columns_to_records(batch)
            writer.append(records)
            summary.add(records)
            if progress is not None:
                progress(len(records))
    return summary


__all__ = ["ParScorer", "columns_to_records", "rank_with_ray", "records_to_columns", "require_ray"]
