"""What the PAL nodes show on themselves after a run: the `ui` part of a node's result.

ComfyUI sends a node's `ui` dict to the browser with the node's `executed` message and keeps it in
/history. `text` is drawn on the node by web/pal_results.js (core ComfyUI draws no text for a custom
node); `par` carries the numbers for scripts that read the history. Auto Fix and Zoom Inpaint show their
summaries (pal_core.verdicts), the same words `pal fix` prints.
"""

from __future__ import annotations


def shown(result: tuple, lines: list[str], par: list[float] | None = None) -> dict:
    """A node's return value with `lines` shown on the node and, for nodes that score images, `par` in the history."""
    ui = {"text": ["\n".join(lines)]}
    if par is not None:
        ui["par"] = list(par)
    return {"ui": ui, "result": result}


def par_lines(par: list[float]) -> list[str]:
    """One line per image: its index in the batch, PAR and the share of artifact pixels."""
    return [f"#{i}  PAR {p:.4f}  ({p:.1%} of pixels)" if p == p else f"#{i}  not scored: NaN or inf pixels"
            for i, p in enumerate(par)]


def precision_lines(precisions: list[str | None], guarded: bool) -> list[str]:
    """With precision auto below fp32 (`guarded`): which precision produced how many of the maps; fp32 ones
    were computed again, or run directly, by the precision guard. Nothing to say otherwise."""
    if not guarded:
        return []
    counts = {name: precisions.count(name) for name in dict.fromkeys(p for p in precisions if p is not None)}
    made = ", ".join(f"{name} for {n} image{'s' if n != 1 else ''}" for name, n in counts.items())
    return [f"precision: {made or 'no image run'} (fp32 where the guard kept fp32's masks or bounded its cost)"]


def rank_lines(report: dict) -> list[str]:
    """Rank by PAR's report, best first: which images were kept."""
    ordered = sorted(report["images"], key=lambda item: (item["par"] is None, item["par"] or 0.0, item["index"]))
    lines = [f"#{item['index']}  PAR {item['par']:.4f}  {'kept' if item['kept'] else '-'}" if item["par"] is not None
             else f"#{item['index']}  not scored: NaN or inf pixels" for item in ordered]
    return lines + ([report["message"]] if "message" in report else [])
