"""What to do with a ranking: pick the best images (of a batch in memory, or of a ranking file), copy
them out, draw a contact sheet.

The sheet follows the paper's Figure 8: images in rank order, artifacts tinted magenta, each with its
rank and PAR.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from itertools import islice, takewhile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_path
from ..detect.masks import DEFAULT_THRESHOLD
from ..imageio import ImageReadError, overlay, read_image, to_uint8
from .scores import Ranking

COPY_NAME_DIGITS = 6  # rank prefix width: copies sort by rank in any file browser


NOT_FINITE = ("non-finite pixels (NaN or inf), so it could not be scored; an fp16 VAE decode can give them: "
              "decode in fp32")


def rank_by_par(par: torch.Tensor, top_k: int = 0, max_par: float = 1.0) -> list[int]:
    """Indices of a batch's images to keep, best (lowest PAR) first.

    Keeps images with PAR <= `max_par`, at most `top_k` of them (0 keeps all). Equal scores keep their
    batch order, so the choice is deterministic. An image whose PAR is NaN (non-finite pixels: it could
    not be scored) is never kept.
    """
    if par.dim() != 1:
        raise ValueError(f"par has shape {tuple(par.shape)}; expected one score per image [B]")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 keeps all), not {top_k}")
    if max_par != max_par:
        raise ValueError("max_par must be a number in [0, 1], not NaN")
    scores = [float(p) for p in par]
    order = sorted((i for i, p in enumerate(scores) if p == p), key=lambda i: (scores[i], i))
    kept = [i for i in order if scores[i] <= max_par]
    return kept[:top_k] if top_k else kept


def select_best(ranking: Ranking, top_k: int | None = None, max_par: float | None = None) -> Iterator[dict]:
    """Scored records best first: at most `top_k` of them, none above `max_par`."""
    records = ranking.records(limit=ranking.scored)
    if max_par is not None:  # sorted: after the first record above it, none can qualify
        records = takewhile(lambda record: record["par"] <= max_par, records)
    return islice(records, top_k) if top_k is not None else records


# ----------------------------------------------------------------------------------------------
# Copies


@dataclass
class CopyReport:
    copied: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)  # left as they were
    failed: list[str] = field(default_factory=list)


def copy_name(record: dict) -> str:
    """`000001_name.png`: the rank first, so two inputs with one name never collide."""
    return f"{record['rank']:0{COPY_NAME_DIGITS}d}_{Path(record['image']).name}"


def copy_best(records: Iterable[dict], folder: str | os.PathLike) -> CopyReport:
    """Copies each record's image into `folder`; a file already there is never replaced."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report = CopyReport()
    for record in records:
        target = folder / copy_name(record)
        try:
            copied = copy_without_overwrite(Path(record["image"]), target)
        except OSError as error:
            report.failed.append(f"{record['image']}: {error}")
            continue
        (report.copied if copied else report.existing).append(target)
    return report


def copy_without_overwrite(source: Path, target: Path) -> bool:
    """Copies to a temporary name, then links it into place: linking fails when the target exists,
    with no window in which another writer could be overwritten. False when the target exists."""
    try:
        with atomic_path(target, overwrite=False) as tmp:
            shutil.copy2(source, tmp)
    except FileExistsError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Contact sheet


@dataclass(frozen=True)
class SheetLayout:
    columns: int = 8
    thumb: int = 160  # each thumbnail fits in thumb x thumb
    caption: int = 16  # text line under each thumbnail
    gap: int = 6
    background: tuple[int, int, int] = (32, 32, 32)
    text: tuple[int, int, int] = (235, 235, 235)

    def size(self, count: int) -> tuple[int, int]:
        """(width, height) of a sheet of `count` thumbnails."""
        columns = max(1, min(self.columns, count))
        rows = max(1, math.ceil(count / columns))
        return (columns * self.thumb + (columns + 1) * self.gap,
                rows * (self.thumb + self.caption) + (rows + 1) * self.gap)

    def cell_origin(self, index: int) -> tuple[int, int]:
        row, column = divmod(index, self.columns)
        return (self.gap + column * (self.thumb + self.gap),
                self.gap + row * (self.thumb + self.caption + self.gap))


def contact_sheet(detector, records: list[dict], threshold: float = DEFAULT_THRESHOLD,
                  layout: SheetLayout = SheetLayout()) -> np.ndarray:
    """A uint8 [H, W, 3] sheet of `records` in order: thumbnails with artifacts tinted, rank and PAR."""
    width, height = layout.size(len(records))
    sheet = Image.new("RGB", (width, height), layout.background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for index, record in enumerate(records):
        x, y = layout.cell_origin(index)
        thumb = _tinted_thumbnail(detector, record["image"], threshold, layout.thumb)
        if thumb is not None:
            sheet.paste(thumb, (x + (layout.thumb - thumb.width) // 2, y + (layout.thumb - thumb.height) // 2))
        draw.text((x, y + layout.thumb + 2), f"#{record['rank']}  PAR {record['par']:.4f}", fill=layout.text, font=font)
    return np.asarray(sheet)


def _tinted_thumbnail(detector, path: str, threshold: float, size: int) -> Image.Image | None:
    """The image with its artifact mask tinted, scaled to fit size x size (None if it cannot be read now)."""
    try:
        image = read_image(path)
    except ImageReadError:
        return None  # moved or deleted since it was scored: an empty cell, the caption still says which
    with torch.inference_mode():
        mask = detector.mask([image], threshold)[0]
    thumb = Image.fromarray(to_uint8(overlay(image, mask.float())))
    scale = size / max(thumb.width, thumb.height)  # small images are enlarged too: cells stay comparable
    return thumb.resize((max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale))),
                        Image.Resampling.BICUBIC)
