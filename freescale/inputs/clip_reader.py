"""An input clip read forward, chunk after chunk of a long render: one decoder kept open between chunks and
the last frames kept for the next chunk's overlap, so the clip is decoded once, always from its start
(never by seeking, whose first frames after a keyframe can differ from a straight decode's)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator

import numpy as np

from freescale.inputs.video_info import VideoInfo
from freescale.inputs.video_reader import iter_frames, read_video_info


class ClipReader:
    """Frames [first, last) of one clip, for calls whose `first` does not go back more than `keep` frames
    behind the furthest frame read (earlier ones reopen the clip and decode from its start)."""

    def __init__(self, info: VideoInfo, keep: int, stamp: tuple[int, int] = (0, 0)):
        self.info = info
        self.keep = keep
        self.stamp = stamp  # the file's (mtime, size) when opened: a rewritten clip is opened anew
        self._decoded: Iterator | None = None
        self._next = 0  # the index of the frame the decoder gives next
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=max(keep, 1))

    def frames(self, first: int, last: int) -> Iterator[np.ndarray]:
        if first < self._next - len(self._recent) or self._decoded is None:
            self._restart()
        for index, pixels in list(self._recent):
            if first <= index < last:
                yield pixels
        while self._next < last:
            pixels = next(self._decoded).pixels
            index, self._next = self._next, self._next + 1
            self._recent.append((index, pixels))
            if index >= first:
                yield pixels

    def _restart(self) -> None:
        self.close()
        self._decoded, self._next = iter_frames(self.info), 0
        self._recent.clear()

    def close(self) -> None:
        if self._decoded is not None:
            self._decoded.close()  # the generator closes its container
            self._decoded = None


_OPEN: list[ClipReader] = []  # this process's reader of the clip it read last


def clip_frames(path: str, first: int, last: int, keep: int) -> Iterator[np.ndarray]:
    """Frames [first, last) of the clip at `path` as RGB arrays, through the process's open reader of it
    when the last call read the same clip (the next chunk of a long render), else a new one."""
    stamp = _stamp(path)
    if not _OPEN or (_OPEN[0].info.path, _OPEN[0].stamp) != (path, stamp) or _OPEN[0].keep < keep:
        while _OPEN:
            _OPEN.pop().close()
        _OPEN.append(ClipReader(read_video_info(path), keep, stamp))
    return _OPEN[0].frames(first, last)


def _stamp(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_mtime_ns, status.st_size
