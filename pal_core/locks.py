"""One run at a time per output: an advisory lock held by a whole command, released with its process.

Two runs writing into one place would each believe its files are its own, and the later would replace
the earlier's without a word. The second run is refused at the start instead, with a sentence.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class BusyError(ValueError):
    """Another run holds the lock on this output."""


def lock_handle(handle, busy: Exception) -> None:
    """Locks an open file exclusively without waiting; raises `busy` when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one run per output is up to the user
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise busy from None


@contextmanager
def exclusive_lock(lock_path: str | os.PathLike, busy_message: str) -> Iterator[None]:
    """Holds `lock_path` (created if missing, never removed: removing it would let a third run lock a
    new file while the second still holds the old one) for the block; BusyError when it is taken."""
    lock_path = Path(lock_path)
    with open(lock_path, "ab") as handle:
        lock_handle(handle, BusyError(busy_message))
        yield
