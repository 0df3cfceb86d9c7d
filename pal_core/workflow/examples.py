"""The example workflows shipped with the project, found by name: `pal run "Fix artifacts in your images"`.

Examples get renamed; a name people were told keeps working. EXAMPLE_ALIASES maps every earlier name to
the example that does that job now (the earlier files themselves are in tests/data/workflows/corpus/).
"""

from __future__ import annotations

from pathlib import Path

from ..hub.resources import examples_dir

# Earlier name -> the example that does its job now. Entries are never removed (docs/compatibility.md).
EXAMPLE_ALIASES = {
    "pal_detect_overlay": "Detect artifacts in your images",
    "pal_autofix_opencv": "Fix artifacts in your images",
    "pal_crop_inpaint_composite": "Crop artifacts for any inpainter",
    "pal_autofix_checkpoint": "Generate then auto-fix artifacts",
    "pal_rank_seed_batch": "Generate seeds and keep the best by PAR",
}


def shipped_examples() -> dict[str, Path]:
    """Example name -> its UI-format file (its API twin is in api/, its images in input/ beside it)."""
    folder = examples_dir()
    return {} if folder is None else {p.stem: p for p in sorted(folder.glob("*.json"))}


def find_example(name: str) -> tuple[Path, str] | None:
    """(the file, its current name) for an example's name or an earlier name of it (".json" may follow)."""
    examples = shipped_examples()
    name = name.removesuffix(".json")
    current = EXAMPLE_ALIASES.get(name, name)
    return (examples[current], current) if current in examples else None


def examples_listing() -> str:
    """The examples' names, one an indented line, for messages that say what can be run by name."""
    names = list(shipped_examples())
    if not names:
        return "  (no examples are installed: they ship with the project, pip install it)"
    return "\n".join(f"  {name}" for name in names)
