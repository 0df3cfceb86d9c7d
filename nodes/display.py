"""What the PAL nodes show on themselves after a run: the `ui` part of a node's result.

ComfyUI sends a node's `ui` dict to the browser with the node's `executed` message and keeps it in
/history. `text` is drawn on the node by web/pal_results.js (core ComfyUI draws no text for a custom
node); `par` carries the numbers for scripts that read the history.
"""

from __future__ import annotations


def shown(result: tuple, lines: list[str], par: list[float]) -> dict:
    """A node's return value with `lines` shown on the node and `par` in the history."""
    return {"ui": {"text": ["\n".join(lines)], "par": list(par)}, "result": result}


def par_lines(par: list[float]) -> list[str]:
    """One line per image: its index in the batch, PAR and the share of artifact pixels."""
    return [f"#{i}  PAR {p:.4f}  ({p:.1%} of pixels)" for i, p in enumerate(par)]


def rank_lines(report: dict) -> list[str]:
    """Rank by PAR's report, best first: which images were kept."""
    ordered = sorted(report["images"], key=lambda item: (item["par"], item["index"]))
    lines = [f"#{item['index']}  PAR {item['par']:.4f}  {'kept' if item['kept'] else '-'}" for item in ordered]
    return lines + ([report["message"]] if "message" in report else [])


def fix_lines(images: list[dict]) -> list[str]:
    """Auto Fix's report: PAR before and after, and how many regions were repainted, per image."""
    lines = []
    for i, image in enumerate(images):
        regions = image["regions"]
        if image.get("skipped"):
            lines.append(f"#{i}  PAR {image['par_before']:.4f}  left alone: {image['skipped']}")
            continue
        after = image["par_after"]
        kept = sum(1 for region in regions if region.get("kept", True))
        change = f"PAR {image['par_before']:.4f} -> {after:.4f}" if after is not None else f"PAR {image['par_before']:.4f}"
        lines.append(f"#{i}  {change}  ({kept} of {len(regions)} regions fixed)" if regions
                     else f"#{i}  {change}  (no artifact regions)")
    return lines
