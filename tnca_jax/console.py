"""What a run tells the person who started it, on stderr: one line per stage with its time, a
warning where a result is no better than it should be, and a closing summary.

Progress bars and these lines go to stderr, so stdout carries only the JSON summary that
scripts read.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO


class Stage:
    """A running stage: set `detail` to say what it produced (shown on its line)."""

    def __init__(self, name: str):
        self.name = name
        self.detail = ""


class Console:
    """Stage lines and warnings on `stream` (default stderr); silent when not `enabled`.

    `timings` holds every finished stage's seconds, in order, whether printed or not.
    """

    def __init__(self, *, enabled: bool = True, stream: TextIO | None = None):
        self.enabled = enabled
        self.stream = stream
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()

    def line(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream or sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        self.line(f"warning: {text}")

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """Time the block as stage `name`; its line is printed when it ends."""
        stage = Stage(name)
        start = time.perf_counter()
        yield stage
        seconds = time.perf_counter() - start
        self.timings[name] = self.timings.get(name, 0.0) + seconds
        self.line(f"[{name:<8} {seconds:7.1f} s] {stage.detail}".rstrip())

    @property
    def elapsed(self) -> float:
        """Seconds since this console was made (the run's wall time so far)."""
        return time.perf_counter() - self._started

    def timing_summary(self) -> str:
        """"stages: a 1.0 s, b 2.0 s (total 3.0 s)": every stage's time and the wall time."""
        stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.timings.items())
        return f"stages: {stages} (total {self.elapsed:.1f} s)"
