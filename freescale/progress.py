"""Progress on the driver: stage k of K, step i of n, frames written, ETA; a bar on a terminal, plain
lines in job logs."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Call `step(stage, num_stages, step, steps)` after each denoising step, `frame(done, total)` as a
    clip is written, `note(text)` for events, `warn(text)` for warnings: shown unless quiet, or as
    `warnings` says (a rank that reports no progress still warns unless the render is --quiet)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        quiet: bool = False,
        line_every: float = 5.0,
        warnings: bool | None = None,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.warnings = not quiet if warnings is None else warnings
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.line_every = line_every
        self._stage_start = time.monotonic()
        self._stage_key: tuple | None = None
        self._first_step = 0
        self._last_line = 0.0
        self._bar_open = False
        # The last step reported, (stage, num_stages, step, steps), kept even when quiet: an interrupted
        # render says where it stopped.
        self.position: tuple[int, int, int, int] | None = None

    def note(self, text: str) -> None:
        if not self.quiet:
            self._end_bar()
            print(text, file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        if self.warnings:
            self._end_bar()
            print(text, file=self.stream, flush=True)

    def step(self, stage: int, num_stages: int, step: int, steps: int, first_step: int = 0) -> None:
        """`step` is the index just finished (0-based); `first_step` is where this stage started."""
        self.position = (stage, num_stages, step, steps)
        if self.quiet:
            return
        now = time.monotonic()
        if self._stage_key != (stage, num_stages):
            self._stage_key, self._stage_start, self._first_step = (stage, num_stages), now, first_step
        done = step + 1 - self._first_step
        remaining = steps - (step + 1)
        rate = (now - self._stage_start) / max(done, 1)
        eta = _clock(remaining * rate)
        label = f"stage {stage + 1}/{num_stages} step {step + 1}/{steps}"
        if self.tty:
            filled = int(24 * (step + 1) / steps)
            bar = "#" * filled + "-" * (24 - filled)
            self.stream.write(f"\r{label} [{bar}] ETA {eta}   ")
            self.stream.flush()
            self._bar_open = True
            if step + 1 == steps:
                self._end_bar()
        elif step + 1 == steps or now - self._last_line >= self.line_every or done == 1:
            self._last_line = now
            print(f"{label} ETA {eta}", file=self.stream, flush=True)

    def frame(self, done: int, total: int) -> None:
        """`done` of a clip's `total` frames decoded and encoded."""
        if self.quiet:
            return
        now = time.monotonic()
        if self._stage_key != ("frames", total):
            self._stage_key, self._stage_start, self._first_step = ("frames", total), now, 0
        eta = _clock((total - done) * (now - self._stage_start) / max(done, 1))
        label = f"frame {done}/{total}"
        if self.tty:
            self.stream.write(f"\r{label} ETA {eta}   ")
            self.stream.flush()
            self._bar_open = True
            if done == total:
                self._end_bar()
        elif done == total or now - self._last_line >= self.line_every or done == 1:
            self._last_line = now
            print(f"{label} ETA {eta}", file=self.stream, flush=True)

    def _end_bar(self) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_open = False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"
