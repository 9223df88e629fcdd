"""Lanczos (a = 3) resizing of an image given as row strips, streamed: each strip is resized across, and
each output row is made as soon as the input rows under its kernel have arrived (a ring of rows)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

Size = tuple[int, int]  # (H, W)
LANCZOS_LOBES = 3
ROWS_PER_STRIP = 64  # output rows handed on at once; also the input rows resized across at once


def lanczos(x: np.ndarray) -> np.ndarray:
    """sinc(x) * sinc(x / 3) inside |x| < 3, else 0."""
    return np.where(np.abs(x) < LANCZOS_LOBES, np.sinc(x) * np.sinc(x / LANCZOS_LOBES), 0.0)


@dataclass(frozen=True)
class Taps:
    """The kernel of a resize along one axis: output i = sum_t weights[i, t] * input[starts[i] + t] for
    t < counts[i] (weights beyond counts[i] are 0)."""

    starts: np.ndarray  # (out,) int
    counts: np.ndarray  # (out,) int
    weights: np.ndarray  # (out, taps) float64, each row summing to 1


def lanczos_taps(in_len: int, out_len: int) -> Taps:
    """Pixel centres map as (i + 0.5) * in/out; shrinking widens the kernel by in/out (antialiasing); taps
    past the edges are dropped and the rest renormalised."""
    scale = in_len / out_len
    stretch = max(scale, 1.0)
    support = LANCZOS_LOBES * stretch
    centres = (np.arange(out_len) + 0.5) * scale
    starts = np.maximum(np.floor(centres - support + 0.5).astype(np.int64), 0)
    stops = np.minimum(np.floor(centres + support + 0.5).astype(np.int64), in_len)
    counts = stops - starts
    taps = int(counts.max())
    offsets = starts[:, None] + np.arange(taps)[None, :]
    weights = lanczos((offsets + 0.5 - centres[:, None]) / stretch)
    weights[np.arange(taps)[None, :] >= counts[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return Taps(starts, counts, weights)


def _across(rows: np.ndarray, taps: Taps | None) -> np.ndarray:
    """(n, W_in, 3) -> (n, W_out, 3) float64, tap by tap (each value summed in the same order whatever n)."""
    pixels = rows.astype(np.float64)
    if taps is None:
        return pixels
    out = np.zeros((len(rows), len(taps.starts), pixels.shape[2]))
    last = pixels.shape[1] - 1
    for t in range(taps.weights.shape[1]):
        columns = np.minimum(taps.starts + t, last)  # past a row's count the weight is 0
        out += pixels[:, columns, :] * taps.weights[None, :, t, None]
    return out


def _to_pixels(rows: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    full = float(np.iinfo(dtype).max)
    return np.clip(np.rint(np.stack(rows)), 0.0, full).astype(dtype)


def lanczos_strips(strips: Iterable[np.ndarray], size: Size, out_size: Size) -> Iterator[np.ndarray]:
    """The image of `size` (H, W) given as `strips` (rows, W, 3) from the top, resized to `out_size` and
    yielded as strips of the same dtype (uint8/uint16, rounded to nearest). Memory: one input strip, the
    kernel's input rows (about 6 * H / H_out of them) and one output strip. The same pixels whatever
    the strip heights (every value is summed tap by tap in one order)."""
    across = lanczos_taps(size[1], out_size[1]) if out_size[1] != size[1] else None
    down = lanczos_taps(size[0], out_size[0]) if out_size[0] != size[0] else None
    ring: deque[np.ndarray] = deque()  # input rows resized across, from row `first` on
    first, received, row, dtype = 0, 0, 0, None
    out: list[np.ndarray] = []
    for strip in strips:
        dtype = strip.dtype
        for top in range(0, len(strip), ROWS_PER_STRIP):
            ring.extend(_across(strip[top : top + ROWS_PER_STRIP], across))
            received += len(strip[top : top + ROWS_PER_STRIP])
            while row < out_size[0] and _needed(down, row) <= received:
                out.append(_down_row(ring, first, down, row))
                row += 1
                keep = _first_needed(down, row) if row < out_size[0] else received
                while first < keep and ring:  # the ring holds input rows first .. received - 1
                    ring.popleft()
                    first += 1
                if len(out) == ROWS_PER_STRIP:
                    yield _to_pixels(out, dtype)
                    out = []
        del strip
    if received != size[0] or row != out_size[0]:
        raise ValueError(f"the strips hold {received} rows, the image {size[0]}")
    if out:
        yield _to_pixels(out, dtype)


def _needed(down: Taps | None, row: int) -> int:
    """How many input rows must have arrived to make output row `row`."""
    if down is None:
        return row + 1
    return int(down.starts[row] + down.counts[row])


def _first_needed(down: Taps | None, row: int) -> int:
    """The first input row that output row `row` and those after it need (starts never decrease)."""
    return row if down is None else int(down.starts[row])


def _down_row(ring: deque[np.ndarray], first: int, down: Taps | None, row: int) -> np.ndarray:
    if down is None:
        return ring[row - first]
    start, acc = int(down.starts[row]), None
    for t in range(int(down.counts[row])):
        term = ring[start + t - first] * down.weights[row, t]
        acc = term if acc is None else acc + term
    return acc
