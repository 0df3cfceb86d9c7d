"""Which model file a result came from: the sha256 of the file a detector was loaded from.

Results kept for reuse (`pal fix` reports, `pal rank` records) carry it, so a run after the file was
replaced (retrained, re-downloaded, another file under the same name) does not take them as its own.
Hashing a 0.5 GB model takes about a second; it is done once per file version (path, size, mtime).
"""

from __future__ import annotations

import os
from pathlib import Path

from .model_store import sha256_of

_known: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, remembered while its size and modification time stay the same."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _known:
        _known[key] = sha256_of(path)
    return _known[key]


def model_sha256(detector) -> str | None:
    """The sha256 of the file `detector` was loaded from; None for a network that came from no file."""
    source = getattr(getattr(detector, "info", None), "source", None)
    if not source or not Path(source).is_file():
        return None
    return file_sha256(source)
