"""Writes docs/nodes.md from the nodes themselves: each node's description, and every input's and output's
tooltip, as ComfyUI shows them. The reference cannot drift from the pack: tests/test_docs.py fails when
docs/nodes.md is not what this script writes.

    python tools/make_node_docs.py            # rewrites docs/nodes.md
    python tools/make_node_docs.py --check    # exit 1 when docs/nodes.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "nodes.md"
sys.path.insert(0, str(ROOT))

HEADER = """\
# Node reference

<!-- Written by tools/make_node_docs.py from the nodes' own descriptions and tooltips: do not edit by hand;
     change the node, then run `python tools/make_node_docs.py`. -->

Install: [install.md](install.md#comfyui). Example workflows: the README. The nodes are in the **PAL**
category; every choice has a default.

After a run, the nodes that measure something show it on themselves: Detect Artifacts and PAR Score
each image's PAR, Rank by PAR every image's PAR (best first) and which were kept, Auto Fix PAR before
-> after and each region's verdict, Zoom Inpaint a line per region. The pack's front-end script
(`web/pal_results.js`, served through `WEB_DIRECTORY`) draws them in a read-only box that is neither
saved with the workflow nor sent with the prompt; the same text and numbers are in the node's `ui`
output, so they are also in ComfyUI's queue and `/history/<prompt_id>` (`outputs.<node>.text`, and
`outputs.<node>.par` as numbers).

Every node checks its IMAGE and MASK inputs first (`pal_core.layouts`): a tensor in another layout
(`[B, C, H, W]`, `[H, W, C]` without a batch, a flat mask) is refused with a message that says how to
fix it. An image with NaN or infinite pixels (an fp16 VAE decode can give them) is never scored as
clean: its PAR is NaN, Rank by PAR never keeps it (its report says why), `pal rank` records it as an
error, ranked last.

Types: `PAL_DETECTOR` (a loaded detector), `PAL_INPAINTER` (anything with
`inpaint(crops, masks, prompts, seeds)`), `PAL_CROPS` (the crop plan: which image, which square box,
which masks, so results can be put back).
"""

DEPRECATED_NOTE = """\
Saved workflows that use these keep loading with their values in place; ComfyUI marks them
deprecated and hides them from the node search. Replace them when convenient."""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _input_type(spec) -> str:
    kind = spec[0]
    return "choice" if isinstance(kind, (list, tuple)) else str(kind)


def _inputs_table(node: type) -> list[str]:
    declared = node.INPUT_TYPES()
    rows = []
    for section in ("required", "optional"):
        for name, spec in declared.get(section, {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            label = f"`{name}`" + (" (optional)" if section == "optional" else "")
            rows.append(f"| {label} | {_input_type(spec)} | {_cell(options.get('tooltip', ''))} |")
    return ["| input | type | |", "|---|---|---|", *rows] if rows else []


def _outputs_table(node: type) -> list[str]:
    names = getattr(node, "RETURN_NAMES", None) or node.RETURN_TYPES
    tips = getattr(node, "OUTPUT_TOOLTIPS", None) or ("",) * len(node.RETURN_TYPES)
    rows = [f"| `{name}` | {kind} | {_cell(tip)} |" for name, kind, tip in zip(names, node.RETURN_TYPES, tips)]
    return ["| output | type | |", "|---|---|---|", *rows] if rows else []


def node_section(node_id: str, node: type, title: str) -> list[str]:
    lines = [f"### {title} (`{node_id}`)", "", _cell(getattr(node, "DESCRIPTION", "")), ""]
    for table in (_inputs_table(node), _outputs_table(node)):
        if table:
            lines += [*table, ""]
    return lines


def render() -> str:
    import pal_nodes

    by_category: dict[str, list[str]] = {}
    for node_id, node in pal_nodes.NODE_CLASS_MAPPINGS.items():
        by_category.setdefault(node.CATEGORY, []).append(node_id)
    lines = [HEADER]
    deprecated = [c for c in by_category if c.endswith("deprecated")]
    for category in [c for c in by_category if c not in deprecated] + deprecated:
        lines += [f"## {category}", ""]
        if category in deprecated:
            lines += [DEPRECATED_NOTE, ""]
        for node_id in by_category[category]:
            title = pal_nodes.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id)
            lines += node_section(node_id, pal_nodes.NODE_CLASS_MAPPINGS[node_id], title)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether docs/nodes.md is current")
    args = parser.parse_args(argv)
    text = render()
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else None
    if args.check:
        if current != text:
            print(f"{OUTPUT} is stale: run python tools/make_node_docs.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        OUTPUT.parent.mkdir(exist_ok=True)
        OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
