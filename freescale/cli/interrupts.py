"""How a stopped render ends: SIGINT and SIGTERM become an exception, so that its cleanup runs (temporary
files, Ray actors, the Ray session); then one last line (for a signal, or a worker lost past its retries)
that says how to continue, and the exit code."""

from __future__ import annotations

import argparse
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from freescale.outputs.checkpoints import CheckpointDir
from freescale.progress import Progress

EXIT_CODES = """exit codes:
  0    every output written
  1    the render (or a batch job) failed, e.g. a lost worker after its retries
  2    bad input, refused before anything is rendered
  130  stopped by SIGINT (Ctrl-C)
  143  stopped by SIGTERM (e.g. a scheduler's preemption); outputs are complete or absent,
       and a render with --checkpoint-dir continues with `freescale render --resume DIR`"""


class ExitCodesFormatter(argparse.HelpFormatter):
    """argparse's help layout, except that a text bringing its own lines (EXIT_CODES) keeps them."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return super()._fill_text(text, width, indent)
        return "".join(indent + line for line in text.splitlines(keepends=True))


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals received while `handled_signals` is active, first one first


class Interrupted(KeyboardInterrupt):
    """A render stopped by a signal. A KeyboardInterrupt, because that is the one exception Ray's waits and
    other libraries' interrupt paths let through (Ray re-raises a plain one, so the signal number is also
    kept in `received_signal()`)."""

    def __init__(self, signum: int, progress: Progress | None = None, checkpoints: str | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.progress = progress  # the driver's reporter: the last step it saw in this process
        self.checkpoints = checkpoints  # the render's checkpoint directory, if it keeps one


def _raise_interrupted(signum: int, frame: object) -> None:
    _received.append(signum)
    if len(_received) == 1:
        raise Interrupted(signum)
    # A second signal while the first one's cleanup runs is ignored: the cleanup is what keeps outputs
    # and checkpoints whole, and it ends within seconds.


@contextmanager
def handled_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise `Interrupted` in the main thread (elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal ignored from the start stays ignored (nohup, a shell's background job and SIGINT).
    previous = {s: signal.getsignal(s) for s in _SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    _received.clear()
    for signum in previous:
        signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def signal_received() -> int | None:
    """The first signal received under `handled_signals`, or None: none came."""
    return _received[0] if _received else None


def received_signal() -> int:
    """The first signal received under `handled_signals`; SIGINT for a KeyboardInterrupt from elsewhere."""
    return _received[0] if _received else signal.SIGINT


@contextmanager
def reporting_interruption(progress: Progress, checkpoints: CheckpointDir | None) -> Iterator[None]:
    """An interruption inside leaves as an `Interrupted` that knows the render's progress and checkpoints."""
    try:
        yield
    except KeyboardInterrupt:
        path = checkpoints.path if checkpoints is not None else None
        raise Interrupted(received_signal(), progress, path) from None


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process that a signal ended."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else received_signal())


def interrupted_line(exc: KeyboardInterrupt, command: str) -> str:
    """The one line a stopped command prints: which signal, where the render was (only what is known:
    the step reported in this process, the checkpoint on disk) and how to continue."""
    signum = exc.signum if isinstance(exc, Interrupted) else received_signal()
    text = f"freescale: interrupted ({signal.Signals(signum).name})"
    if command == "batch":
        return f"{text}; rerun the same `freescale batch` to continue (finished outputs are skipped)"
    if not isinstance(exc, Interrupted) or exc.progress is None:
        return text
    if exc.progress.position is not None:
        stage, num_stages, step, steps = exc.progress.position
        text += f" at stage {stage + 1}/{num_stages} step {step + 1}/{steps}"
    return f"{text}; {resume_hint(exc.checkpoints, command)}"


def worker_lost_line(lost: RuntimeError, command: str, checkpoints: str | None) -> str:
    """The last line of a render that lost a worker: what died, that the retries (if any) are used up,
    and how to continue."""
    text = f"freescale: error: {lost}"
    retries = getattr(lost, "retries", None)
    if retries == 0:
        text += "; not retried (--max-retries 0)"
    elif retries is not None:
        text += f"; gave up after {retries} retr{'y' if retries == 1 else 'ies'} (--max-retries {retries})"
    if command == "batch":
        return text
    return f"{text}; {resume_hint(checkpoints, command)}"


def _clip_chunks(stored: dict) -> list[tuple[int, int]]:
    """The chunks of a stored video render (one for an image)."""
    from freescale.tiling.frame_chunks import frame_chunks

    if not stored.get("motion_adapter"):
        return [(0, 1)]
    return frame_chunks(stored["frames"], stored["chunk_frames"], stored["chunk_overlap"])


def resume_hint(checkpoints: str | None, command: str = "render") -> str:
    """How to continue a stopped render (`command`: render or video): from its checkpoint directory, or
    (without one) how to keep one."""
    if checkpoints is None:
        return "no checkpoints were kept (--checkpoint-dir makes a render resumable)"
    command = f"`freescale {command} --resume {shlex.quote(checkpoints)}`"
    directory = CheckpointDir(checkpoints)
    try:
        stored = directory.stored_config()
        if stored is None:
            return f"{command} starts it again"
        num_stages = len(stored["config"]["stages"])
        chunks = _clip_chunks(stored["config"])
        for index in range(len(chunks)):
            chunk = directory.chunk(index) if len(chunks) > 1 else directory
            snapshot = chunk.load(num_stages)
            if len(snapshot.finished) < num_stages:
                where = f"chunk {index + 1}/{len(chunks)}, " if len(chunks) > 1 else ""
                return f"{command} continues from {where}{snapshot.describe()}"
        return f"{command} writes the outputs (every stage is rendered)"
    except Exception:  # a checkpoint unreadable now: --resume names it, and continues from an earlier one
        return f"{command} continues from its last good checkpoint"
