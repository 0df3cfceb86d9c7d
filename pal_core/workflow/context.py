"""The folders and metadata of the run in progress, for the core nodes that read and write files.

ComfyUI keeps these in process-wide globals (folder_paths); a context variable lets several runs, e.g.
tests, use different folders without touching global state.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunContext:
    input_dir: Path
    output_dir: Path
    preview_dir: Path | None = None  # PreviewImage writes nothing unless this is set
    prompt: dict = field(default_factory=dict)  # given to hidden PROMPT inputs, saved in PNGs
    extra_pnginfo: dict | None = None  # {"workflow": UI document}, given to hidden EXTRA_PNGINFO inputs


_current: ContextVar[RunContext | None] = ContextVar("pal_workflow_run", default=None)


def current_run() -> RunContext | None:
    """The run in progress, or None (e.g. when a tool lists a node's INPUT_TYPES outside a run)."""
    return _current.get()


@contextmanager
def running(context: RunContext):
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
