"""What `pal detect` and `pal fix` tell a person on stderr while they work.

A progress bar (images, and the current image's regions for fixes) only when stderr is a terminal:
in a log or a pipe it would be noise. The line per image, the summary and the advice are printed
either way, unless `--quiet`; errors are always printed. JSON results never go here (stdout / files).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm

from ..outputs import is_fatal_write_error


# Characters that a terminal obeys instead of showing: C0 and C1 controls (ESC starts the sequences that
# retitle the window, clear the screen or move the cursor), DEL, and the bidirectional overrides that make
# text read differently from what it holds.
_BIDI = {0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)}
_CONTROLS.update({c: f"\\u{c:04x}" for c in _BIDI})


def terminal_text(text: object, newline: str | None = "\n") -> str:
    """`text` safe to print: every control character shown as an escape (\\x1b), never obeyed. A line break
    becomes `newline`; None escapes it too (one line that nothing inside can split into forged ones)."""
    table = dict(_CONTROLS)
    table[0x0A] = "\\n" if newline is None else newline
    return str(text).translate(table)


class Console:
    def __init__(self, command: str, total: int, quiet: bool = False, stream: TextIO | None = None,
                 steps: str | None = None):
        """`total` images; `steps` names the units of the per-image bar (e.g. "step" for a fix's
        detection, regions and re-detection), None for no per-image bar."""
        self.command = command
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        show = not quiet and _is_terminal(self.stream)
        self._bar = tqdm(total=total, desc=command, unit="image", file=self.stream, disable=not show,
                         dynamic_ncols=True)
        self._steps = (tqdm(total=0, desc="  this image", unit=steps, file=self.stream, disable=not show,
                            leave=False, position=1, dynamic_ncols=True, bar_format="{desc}: {n}/{total} {unit}s")
                       if steps else None)

    def line(self, text: str) -> None:
        """A line for the person (hidden by --quiet), printed above the bars."""
        if not self.quiet:
            tqdm.write(terminal_text(text), file=self.stream)

    def error(self, text: str) -> None:
        """Always printed, --quiet or not."""
        tqdm.write(f"pal {self.command}: {terminal_text(text)}", file=self.stream)

    def step_progress(self, done: int, total: int) -> None:
        """A progress(done, total) callback for the work on the current image."""
        if self._steps is not None and not self._steps.disable:
            self._steps.total = total
            self._steps.n = done
            self._steps.refresh()

    def image_done(self) -> None:
        self._bar.update(1)
        if self._steps is not None and not self._steps.disable:
            self._steps.reset(total=0)

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()
        self._bar.close()

    def stopped_by(self, error: OSError) -> bool:
        """True (having said so and closed the bars) when a write error must end the run: a full disk or a
        read-only folder fails every image after it. Anything else fails one image, and the run goes on."""
        if not is_fatal_write_error(error):
            return False
        self.error("stopped; every output written so far is complete. Free space or fix the folder, "
                   "then run the same command again to continue")
        self.close()
        return True


class LogProgress:
    """Progress for a log file or a pipe, where a bar would be noise and silence looks like a hang: a line
    every `every_seconds` (and a last one when done), e.g. `pal rank: 1200 of 50000 images, 3.1 images/s,
    about 4.4 h left`. Has the part of tqdm's interface the commands use (update, total, refresh, close)."""

    def __init__(self, command: str, stream: TextIO, every_seconds: float = 30.0, unit: str = "images",
                 clock: Callable[[], float] = time.monotonic):
        self.command, self.stream, self.every, self.unit, self.clock = command, stream, every_seconds, unit, clock
        self.n = 0
        self.total: int | None = None
        self._start = self._last = clock()
        self._said = 0

    def update(self, count: int = 1) -> None:
        self.n += count
        if self.clock() - self._last >= self.every:
            self._say()

    def refresh(self) -> None:
        """tqdm redraws here; a log gets its lines from update() only."""

    def close(self) -> None:
        if self.n != self._said:
            self._say()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _say(self) -> None:
        now = self.clock()
        self._last, self._said = now, self.n
        done = f"{self.n} of {self.total}" if self.total else f"{self.n}"
        rate = self.n / (now - self._start) if now > self._start else 0.0
        text = f"pal {self.command}: {done} {self.unit}, {rate:.1f} {self.unit}/s"
        if self.total and rate > 0 and self.n < self.total:
            text += f", about {_duration((self.total - self.n) / rate)} left"
        print(text, file=self.stream, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def progress_bar(command: str, hidden: bool = False, stream: TextIO | None = None, every_seconds: float = 30.0):
    """A tqdm bar on a terminal, LogProgress lines elsewhere; `hidden` (--no-progress) shows neither."""
    stream = stream if stream is not None else sys.stderr
    if not hidden and not _is_terminal(stream):
        return LogProgress(command, stream, every_seconds)
    return tqdm(unit="img", disable=hidden, dynamic_ncols=True, desc=f"pal {command}", file=stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False
