"""Long commands say how far they are in a log too: a line every N seconds when stderr is not a terminal."""

from __future__ import annotations

import io

from tqdm import tqdm

from pal_core.cli.console import LogProgress, progress_bar


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_line_every_interval_with_rate_and_time_left_then_a_last_line():
    stream, clock = io.StringIO(), Clock()
    with LogProgress("rank", stream, every_seconds=30, clock=clock) as progress:
        progress.total = 1000
        for second in range(1, 100):  # 2 images a second for 99 s
            clock.now = float(second)
            progress.update(2)
    lines = stream.getvalue().splitlines()
    assert lines == ["pal rank: 60 of 1000 images, 2.0 images/s, about 8 min left",  # 470 s
                     "pal rank: 120 of 1000 images, 2.0 images/s, about 7 min left",
                     "pal rank: 180 of 1000 images, 2.0 images/s, about 7 min left",
                     "pal rank: 198 of 1000 images, 2.0 images/s, about 7 min left"]  # the last, at close


def test_without_a_total_it_counts_and_a_finished_run_says_nothing_more():
    stream, clock = io.StringIO(), Clock()
    progress = LogProgress("rank", stream, every_seconds=10, clock=clock)
    clock.now = 12.0
    progress.update(24)
    progress.close()  # nothing new since the last line
    assert stream.getvalue().splitlines() == ["pal rank: 24 images, 2.0 images/s"]


def test_short_and_long_waits_are_said_in_seconds_minutes_and_hours():
    stream, clock = io.StringIO(), Clock()
    progress = LogProgress("rank", stream, every_seconds=1, clock=clock)
    progress.total = 100_000
    clock.now = 10.0
    progress.update(10)  # 1 image/s: 99,990 s left
    progress.total = 1_010
    clock.now = 20.0
    progress.update(10)  # 1 image/s, 990 s left
    progress.total = 80
    clock.now = 40.0
    progress.update(20)  # 1 image/s, 40 s left
    assert stream.getvalue().splitlines() == ["pal rank: 10 of 100000 images, 1.0 images/s, about 27.8 h left",
                                              "pal rank: 20 of 1010 images, 1.0 images/s, about 16 min left",
                                              "pal rank: 40 of 80 images, 1.0 images/s, about 40 s left"]


def test_a_terminal_gets_a_bar_a_log_gets_lines_and_no_progress_gets_neither():
    assert isinstance(progress_bar("rank", stream=io.StringIO()), LogProgress)
    bar = progress_bar("rank", stream=Terminal())
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    hidden = progress_bar("rank", hidden=True, stream=io.StringIO())
    assert isinstance(hidden, tqdm) and hidden.disable
