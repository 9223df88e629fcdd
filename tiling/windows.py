"""Local attention windows of scale fusion: window size, starts, jitter ranges and draws (SPEC 4)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


def window_size(grid_len: int, n: int) -> int:
    """Window length along one axis of a token grid at scale count n = max(n_h, n_w)."""
    return max(grid_len // n, 1)


def blur_kernel_size(n: int) -> int:
    """Taps of the Gaussian G that fuses the branches at scale count n (SPEC 4): 2n - 1."""
    return 2 * n - 1


def window_stride(window: int) -> int:
    # The reference divides by the stride; a 1-token window (only on toy grids) would make it 0.
    return max(window // 2, 1)


def jitter_range(window: int) -> int:
    """How far a window may move, and how much zero padding the grid gets on each side."""
    return window // 8


def window_starts(length: int, window: int) -> list[int]:
    """Unpadded starts of the windows along an axis, the last one shifted back to end at `length`."""
    if length <= window:
        return [0]
    stride = window_stride(window)
    count = int((length - window) / stride - 1e-6) + 2
    return [min(k * stride, length - window) for k in range(count)]


def jitter_bounds(start: int, window: int, length: int, reach: int) -> tuple[int, int]:
    """Inclusive jitter interval: a window never moves off an edge it touches."""
    at_start = start == 0
    at_end = start + window == length
    if at_start and at_end:
        return (0, 0)
    if at_start:
        return (-reach, 0)
    if at_end:
        return (0, reach)
    return (-reach, reach)


def jitter_key(seed: int, stage: int, step: int, layer: int) -> int:
    """A stable 64-bit key for one layer's jitter draws, independent of sharding and resumes."""
    text = f"freescale-jitter/{seed}/{stage}/{step}/{layer}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


@dataclass(frozen=True)
class LocalWindows:
    """All local windows of one layer, in coordinates of the grid padded by `pad` on each side."""

    grid: tuple[int, int]
    size: tuple[int, int]
    pad: tuple[int, int]
    corners: tuple[tuple[int, int], ...]

    @property
    def padded_grid(self) -> tuple[int, int]:
        return (self.grid[0] + 2 * self.pad[0], self.grid[1] + 2 * self.pad[1])


def local_windows(grid: tuple[int, int], n: int, key: int | None) -> LocalWindows:
    """Windows of a token grid, row-major; `key` None means no jitter (every j = 0)."""
    h, w = grid
    wh, ww = window_size(h, n), window_size(w, n)
    rh, rw = jitter_range(wh), jitter_range(ww)
    rng = random.Random(key) if key is not None else None
    corners = []
    for top in window_starts(h, wh):
        for left in window_starts(w, ww):
            jh = jw = 0
            if rng is not None:
                jh = rng.randint(*jitter_bounds(top, wh, h, rh))
                jw = rng.randint(*jitter_bounds(left, ww, w, rw))
            corners.append((top + jh + rh, left + jw + rw))
    return LocalWindows(grid=(h, w), size=(wh, ww), pad=(rh, rw), corners=tuple(corners))


@dataclass(frozen=True)
class BandWindows:
    """The windows that touch a band of rows, ready to run on just the rows they cover."""

    rows: tuple[int, int]  # unpadded rows [r0, r1) they cover; may reach into the zero padding
    windows: LocalWindows  # those windows, rows counted from r0, columns in padded coordinates


def windows_touching_rows(windows: LocalWindows, band: tuple[int, int]) -> BandWindows:
    """Every window with a row in `band` (all of a band row's windows, so its average is complete)."""
    (ph, pw), (wh, _) = windows.pad, windows.size
    a, b = band
    touching = [(top - ph, left) for top, left in windows.corners if top - ph < b and top - ph + wh > a]
    if not touching:
        return BandWindows((a, a), LocalWindows((0, windows.grid[1]), windows.size, (0, pw), ()))
    r0 = min(top for top, _ in touching)
    r1 = max(top for top, _ in touching) + wh
    corners = tuple((top - r0, left) for top, left in touching)
    return BandWindows((r0, r1), LocalWindows((r1 - r0, windows.grid[1]), windows.size, (0, pw), corners))
