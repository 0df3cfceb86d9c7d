"""What a person reads after `pal detect` / `pal fix` or a node: one line per image, a summary, and what
to try when nothing was found or nothing helped.

Everything here works on the JSON-ready reports (`RefineResult.report()`, `pal detect`'s records), so
the command line, the nodes and anything reading the saved JSON say the same thing in the same words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

OFFICIAL_MODEL = "pal4vst-unified"
OFFICIAL_MODEL_HINT = (f"the official PAL4VST model finds more (`pal download {OFFICIAL_MODEL}`; once installed "
                       "it is the default)")
# The same advice on a node names the node's widgets, never command-line options.
OFFICIAL_MODEL_NODE_HINT = (f"the official PAL4VST model finds more (choose {OFFICIAL_MODEL} on Load Artifact "
                            "Detector with download_if_missing on)")


def region_verdict(region: dict) -> str:
    """'#1 fixed (artifact px 153 -> 12)', '#0 rejected (artifact px 12 -> 1204: not fewer)' or
    '#2 applied (not checked)' for one region of `RefineResult.report()`."""
    number = f"#{region['region']}"
    before, after = region["artifact_px_before"], region.get("artifact_px_after")
    if after is None:
        return f"{number} applied (not checked: re-detection off)"
    if region["kept"]:
        return f"{number} fixed (artifact px {before} -> {after})"
    return f"{number} rejected (artifact px {before} -> {after}: not fewer)"


def fix_line(name: str, report: dict, output: str | None = None) -> str:
    """One line for one fixed image: PAR before -> after, regions fixed / rejected and why, the output file."""
    where = f" -> {output}" if output else ""
    par_before = report["par_before"]
    if report.get("skipped"):
        return f"{name}: PAR {par_before:.4f}, left alone: {report['skipped']}{where}"
    regions = report["regions"]
    if not regions:
        return f"{name}: PAR {par_before:.4f}, no artifact region to fix{where}"
    par_after = report.get("par_after")
    par = f"PAR {par_before:.4f}" + (f" -> {par_after:.4f}" if par_after is not None else "")
    kept = sum(1 for r in regions if r["kept"])
    details = ", ".join(region_verdict(r) for r in regions)
    return f"{name}: {par}; {kept} of {_count(len(regions), 'region')} fixed: {details}{where}"


def detect_line(name: str, record: dict, regions: int | None = None) -> str:
    """One line for one detected image: PAR, regions (when counted), the highest probability, outputs."""
    found = f", {_count(regions, 'region')}" if regions is not None else ""
    where = f" -> {record['outputs']['overlay']}" if record.get("outputs") else ""
    return f"{name}: PAR {record['par']:.4f}{found}, highest artifact probability {record['max_prob']:.2f}{where}"


def official_model_hint(detector: str, on_node: bool = False) -> str:
    """'; the official model finds more (...)' unless the detector is an official one already."""
    if detector.startswith("pal4vst"):
        return ""
    return "; " + (OFFICIAL_MODEL_NODE_HINT if on_node else OFFICIAL_MODEL_HINT)


@dataclass
class FixTally:
    """Counts what happened to the images of a `pal fix` run, for the summary and its advice."""

    threshold: float
    inpainter: str
    other_inpainters: tuple[str, ...] = ()
    detector: str = ""  # its name: the official model is not suggested to its own users
    on_node: bool = False  # advice names Auto Fix's widgets instead of `pal fix`'s options
    images: int = 0
    improved: int = 0  # at least one fix kept
    rejected: int = 0  # regions found, every fix rejected
    clean: int = 0  # no region found
    skipped: int = 0  # left alone (mask too large)
    failed: int = 0
    already_done: int = 0  # fixed by an earlier run into the same folder: not run again
    regions_fixed: int = 0
    regions_rejected: int = 0
    skip_reasons: list[str] = field(default_factory=list)

    def add(self, report: dict) -> None:
        self.images += 1
        regions = report["regions"]
        fixed = sum(1 for r in regions if r["kept"])
        self.regions_fixed += fixed
        self.regions_rejected += len(regions) - fixed
        if report.get("skipped"):
            self.skipped += 1
            self.skip_reasons.append(report["skipped"])
        elif not regions:
            self.clean += 1
        elif fixed:
            self.improved += 1
        else:
            self.rejected += 1

    def add_failure(self) -> None:
        self.images += 1
        self.failed += 1

    def summary(self, out: str | None = None) -> list[str]:
        """The closing lines: counts, where the results are, and what to try when nothing changed."""
        done = self.images - self.failed
        parts = [f"{self.improved} improved ({_count(self.regions_fixed, 'region')} fixed)"] if self.images else []
        if self.rejected:
            parts.append(f"{self.rejected} unchanged (every fix rejected)")
        if self.clean:
            parts.append(f"{self.clean} with no artifact found")
        if self.skipped:
            parts.append(f"{self.skipped} left alone")
        if self.already_done:
            parts.append(f"{self.already_done} already fixed by an earlier run (skipped)")
        lines = [f"{_count(self.images + self.already_done, 'image')}: " + ", ".join(parts)
                 + (f"; results (PNG + JSON per image) in {out}" if (done or self.already_done) and out else "")]
        if done and self.improved == 0:
            lines += self.advice()
        return lines

    def advice(self) -> list[str]:
        """What to try when no image improved, by what went wrong."""
        return self._node_advice() if self.on_node else self._command_advice()

    def _command_advice(self) -> list[str]:
        lines = []
        if self.rejected:
            others = ", ".join(f"--inpainter {name}" for name in self.other_inpainters)
            lines.append(
                f"{self._undone()} Try another inpainter ({others + ', ' if others else ''}"
                "or diffusers:PATH for real content), --color-match, or --no-redetect to keep the fixes anyway "
                "and judge them yourself (--sheet FILE draws them side by side)")
        if self.clean:
            lines.append(f"no artifact was found at --threshold {self.threshold}: if you see some, try a lower "
                         f"threshold (e.g. --threshold {self._lower_threshold()})" + official_model_hint(self.detector))
        if self.skipped:
            lines.append(f"left alone: {self.skip_reasons[0]}; raise --max-area-ratio to fix such images anyway, "
                         "or raise --threshold")
        return lines

    def _node_advice(self) -> list[str]:
        lines = []
        if self.rejected:
            lines.append(
                f"{self._undone()} Try another inpainter (another method on Load OpenCV Inpainter, or Load Diffusers "
                "Inpainter / ComfyUI Model Inpainter for real content), color_match on, or redetect off to keep the "
                "fixes anyway and judge them yourself")
        if self.clean:
            lines.append(f"no artifact was found at threshold {self.threshold}: if you see some, set a lower "
                         f"threshold (e.g. {self._lower_threshold()})" + official_model_hint(self.detector, True))
        if self.skipped:
            lines.append(f"left alone: {self.skip_reasons[0]}; raise threshold, or fix such images with "
                         "Connected-Component Crop (raise its max_area_ratio), Zoom Inpaint and Composite")
        return lines

    def _undone(self) -> str:
        return (f"nothing was fixed: re-detection found as many artifacts or more after {self.inpainter} repainted "
                "each region, so every fix was undone.")

    def _lower_threshold(self) -> float:
        return max(0.05, round(self.threshold - 0.2, 2))


def fix_summary(reports: list[dict], threshold: float, inpainter: str, detector: str = "") -> str:
    """The text a node shows after fixing a batch: a line per image, the counts, advice if nothing helped."""
    tally = FixTally(threshold, inpainter, detector=detector, on_node=True)
    lines = []
    for index, report in enumerate(reports):
        tally.add(report)
        lines.append(fix_line(f"image {index}", report))
    return "\n".join(lines + tally.summary())


def inpaint_line(index: int, crop: torch.Tensor, inpainted: torch.Tensor, mask: torch.Tensor, seed: int,
                 region=None) -> str:
    """What an inpainter did to one crop: where (a `CropRegion`, when known), how many pixels it was
    asked to repaint, and how much it changed them (mean over the mask, 0..255)."""
    holes = mask > 0.5
    repainted = int(holes.sum())
    change = float((inpainted - crop).abs().mean(dim=-1)[holes].mean() * 255) if repainted else 0.0
    where = f"image {region.image_index} region #{region.index_in_image}" if region is not None else f"crop {index}"
    verdict = "unchanged" if change < 0.5 else f"mean change {change:.1f}/255"
    return (f"{where}: {repainted} px repainted ({repainted / holes.numel():.0%} of the crop), {verdict}, seed {seed}"
            " (not checked: Auto Fix or Detect Artifacts after Composite tells whether it helped)")


@dataclass
class DetectTally:
    """Counts what `pal detect` found, for the summary and its advice."""

    threshold: float
    detector: str = ""
    images: int = 0
    with_artifacts: int = 0
    failed: int = 0
    already_done: int = 0  # outputs written by an earlier run into the same folder: not run again
    par_sum: float = 0.0
    highest_probability: float = 0.0

    def add(self, record: dict) -> None:
        self.images += 1
        self.with_artifacts += record["par"] > 0
        self.par_sum += record["par"]
        self.highest_probability = max(self.highest_probability, record["max_prob"])

    def add_failure(self) -> None:
        self.images += 1
        self.failed += 1

    def summary(self, out: str | None) -> list[str]:
        read = self.images - self.failed
        mean = self.par_sum / read if read else 0.0
        parts = [f"{self.with_artifacts} with artifacts, {read - self.with_artifacts} without (mean PAR {mean:.4f})"]
        if self.already_done:
            parts.append(f"{self.already_done} already done by an earlier run (skipped)")
        if not self.images and self.already_done:
            parts.pop(0)  # nothing ran: no counts to give
        line = f"{_count(self.images + self.already_done, 'image')}: " + ", ".join(parts)
        if out and (read or self.already_done):
            line += f"; masks, probabilities and overlays in {out}"
        lines = [line]
        if read and not self.with_artifacts:
            lines.append(f"no artifact was found at --threshold {self.threshold} (the highest probability seen was "
                         f"{self.highest_probability:.2f}): if you see some, try a lower --threshold"
                         + official_model_hint(self.detector))
        return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
