"""Before/after contact sheets for `pal detect --sheet` and `pal fix --sheet`: judge a run at a glance.

One row per image: the input, its artifacts (mask tinted magenta, each region's crop box numbered),
the result (fixed regions boxed green, rejected ones red) or, for detection, the probability map;
then one column per region with its crop before (top) and after (bottom), numbered, with the
artifact pixels the detector found there. A row is made as soon as an image is done and keeps only
thumbnails, so a long run does not hold its images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .imageio import overlay, to_uint8
from .refinement.crops import clip_box

KEPT = (60, 200, 90)
REJECTED = (230, 60, 60)
UNCHECKED = (240, 200, 60)
REGION = (255, 255, 255)


@dataclass(frozen=True)
class SheetStyle:
    panel: int = 256  # input / artifacts / result fit in panel x panel
    max_regions: int = 6  # region columns per row; the rest are counted in the row's title
    gap: int = 8
    title: int = 18  # the row's title line (file name and verdict)
    caption: int = 16  # a line under each picture
    background: tuple[int, int, int] = (30, 30, 30)
    text: tuple[int, int, int] = (235, 235, 235)

    @property
    def crop(self) -> int:
        """Side of a region's before / after thumbnail: two of them, stacked, fill a panel's height."""
        return (self.panel - self.caption) // 2

    def row_size(self) -> tuple[int, int]:
        """(width, height) of one row: three panels and `max_regions` crop columns."""
        width = self.gap + 3 * (self.panel + self.gap) + self.max_regions * (self.crop + self.gap)
        return width, self.title + self.panel + self.caption + self.gap

    def sheet_size(self, rows: int) -> tuple[int, int]:
        width, height = self.row_size()
        return width, self.gap + max(rows, 1) * height


@dataclass
class SheetRow:
    title: str
    panels: list[tuple[Image.Image, str]]  # (picture fitted to panel x panel, caption), three of them
    regions: list[tuple[int, Image.Image, Image.Image | None, str, str, tuple[int, int, int]]]
    more_regions: int = 0  # regions not drawn (beyond max_regions)


def fix_row(title: str, image: torch.Tensor, mask: torch.Tensor, result: torch.Tensor, attempted: torch.Tensor,
            regions: list[dict], par_before: float, par_after: float | None,
            style: SheetStyle = SheetStyle()) -> SheetRow:
    """A row for one fixed image. `regions` are `RefineResult.report()`'s region dicts; `mask` the
    detector's mask [H, W] before the fix; `attempted` the image with every fix in, so a rejected
    fix is shown too (the result has it undone)."""
    boxes = [(r["region"], r["box"], _colour(r)) for r in regions]
    after = f"result  PAR {par_after:.4f}" if par_after is not None else "result (not re-detected)"
    panels = [(_fit(image, style.panel), f"input  PAR {par_before:.4f}"),
              (_fit(overlay(image, mask.float()), style.panel, boxes, REGION), f"artifacts: {len(regions)} regions"),
              (_fit(result, style.panel, boxes), after)]
    columns = []
    for region in regions[:style.max_regions]:
        before = _fit(_crop(image, region["box"]), style.crop)
        fixed = _fit(_crop(attempted, region["box"]), style.crop)
        after_px = region.get("artifact_px_after")
        state = "kept" if region["kept"] and after_px is not None else ("rejected" if after_px is not None else "applied")
        columns.append((region["region"], before, fixed, f"px {region['artifact_px_before']}",
                        f"px {after_px if after_px is not None else '?'} {state}", _colour(region)))
    return SheetRow(title, panels, columns, max(0, len(regions) - style.max_regions))


def detect_row(title: str, image: torch.Tensor, mask: torch.Tensor, probability: torch.Tensor,
               boxes: list[tuple[int, int, int, int]], par_value: float, style: SheetStyle = SheetStyle()) -> SheetRow:
    """A row for one detected image: input, artifacts with the crop boxes a fix would repaint, the
    probability map, and each region's crop (no after)."""
    numbered = [(i, box, REGION) for i, box in enumerate(boxes)]
    heat = probability.float().clamp(0, 1).unsqueeze(-1).expand(*probability.shape, 3)
    panels = [(_fit(image, style.panel), "input"),
              (_fit(overlay(image, mask.float()), style.panel, numbered, REGION), f"artifacts  PAR {par_value:.4f}"),
              (_fit(heat, style.panel), "probability (white = 1)")]
    columns = []
    for i, box in enumerate(boxes[:style.max_regions]):
        x0, y0, x1, y1 = clip_box(box, *mask.shape[-2:])
        pixels = int(mask[y0:y1, x0:x1].sum())
        columns.append((i, _fit(_crop(image, box), style.crop), None, f"px {pixels}", "", REGION))
    return SheetRow(title, panels, columns, max(0, len(boxes) - style.max_regions))


def draw_sheet(rows: list[SheetRow], style: SheetStyle = SheetStyle()) -> np.ndarray:
    """The sheet as uint8 [H, W, 3]: the rows one under another, at `style.sheet_size(len(rows))`."""
    width, height = style.sheet_size(len(rows))
    sheet = Image.new("RGB", (width, height), style.background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    row_height = style.row_size()[1]
    for index, row in enumerate(rows):
        top = style.gap + index * row_height
        more = f"   (+{row.more_regions} more regions: see the JSON)" if row.more_regions else ""
        draw.text((style.gap, top + 2), row.title + more, fill=style.text, font=font)
        top += style.title
        x = style.gap
        for picture, caption in row.panels:
            _paste_centred(sheet, picture, x, top, style.panel)
            draw.text((x, top + style.panel + 2), caption, fill=style.text, font=font)
            x += style.panel + style.gap
        for number, before, after, before_caption, after_caption, colour in row.regions:
            _paste_centred(sheet, before, x, top, style.crop)
            draw.text((x + 2, top + 1), f"#{number}", fill=colour, font=font, stroke_width=1, stroke_fill=(0, 0, 0))
            draw.text((x, top + style.crop + 1), before_caption, fill=style.text, font=font)
            lower = top + style.crop + style.caption
            if after is not None:
                _paste_centred(sheet, after, x, lower, style.crop)
            draw.text((x, lower + style.crop + 1), after_caption, fill=colour, font=font)
            x += style.crop + style.gap
    return np.asarray(sheet)


def _colour(region: dict) -> tuple[int, int, int]:
    if region.get("artifact_px_after") is None:
        return UNCHECKED
    return KEPT if region["kept"] else REJECTED


def _crop(image: torch.Tensor, box) -> torch.Tensor:
    x0, y0, x1, y1 = clip_box(tuple(box), image.shape[0], image.shape[1])
    return image[y0:y1, x0:x1]


def _fit(image: torch.Tensor, size: int, boxes=(), colour=None) -> Image.Image:
    """image [H, W, 3] in 0..1 scaled to fit size x size (small crops are enlarged), with `boxes`
    ((number, (x0, y0, x1, y1), colour), ...) outlined and numbered."""
    picture = Image.fromarray(to_uint8(image))
    scale = size / max(picture.width, picture.height)
    picture = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))),
                             Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)
    if boxes:
        draw = ImageDraw.Draw(picture)
        for number, box, box_colour in boxes:
            x0, y0, x1, y1 = (round(v * scale) for v in box)
            outline = colour or box_colour
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=outline, width=2)
            draw.text((max(x0, 0) + 3, max(y0, 0) + 2), f"#{number}", fill=outline, stroke_width=1,
                      stroke_fill=(0, 0, 0))
    return picture


def _paste_centred(sheet: Image.Image, picture: Image.Image, x: int, y: int, size: int) -> None:
    sheet.paste(picture, (x + (size - picture.width) // 2, y + (size - picture.height) // 2))
