"""Window geometry of scale fusion against values worked out by hand (SPEC 4)."""

import pytest

from freescale.tiling.windows import (
    jitter_bounds,
    jitter_key,
    jitter_range,
    local_windows,
    window_size,
    window_starts,
)


@pytest.mark.parametrize(
    "length, window, expected",
    [
        (32, 16, [0, 8, 16]),  # m = int(16/8 - eps) + 2 = 3
        (20, 8, [0, 4, 8, 12]),  # m = int(12/4 - eps) + 2 = 4
        (21, 8, [0, 4, 8, 12, 13]),  # the fifth window (16..24) shifts back to end at 21
        (64, 32, [0, 16, 32]),
        (8, 8, [0]),
        (5, 8, [0]),
        (24, 8, [0, 4, 8, 12, 16]),
        (10, 3, [0, 1, 2, 3, 4, 5, 6, 7]),  # stride 1: m = int(7 - eps) + 2 = 8
    ],
)
def test_window_starts(length, window, expected):
    assert window_starts(length, window) == expected


def test_window_size_and_jitter_range():
    # Square 4x target at SDXL level 1: 256 tokens per side, n = 4 -> 64-token windows, reach 8.
    assert window_size(256, 4) == 64 and jitter_range(64) == 8
    assert window_size(33, 2) == 16 and jitter_range(16) == 2
    assert jitter_range(7) == 0


def test_jitter_bounds_at_edges():
    assert jitter_bounds(0, 16, 32, 2) == (-2, 0)
    assert jitter_bounds(8, 16, 32, 2) == (-2, 2)
    assert jitter_bounds(16, 16, 32, 2) == (0, 2)
    assert jitter_bounds(0, 8, 8, 1) == (0, 0)


def test_non_square_grid_windows_unjittered():
    # A 1:2 target at n = 2: grid 16 x 32 tokens, windows 8 x 16, padding (1, 2).
    windows = local_windows((16, 32), 2, key=None)
    assert windows.size == (8, 16) and windows.pad == (1, 2)
    assert windows.padded_grid == (18, 36)
    expected = [(top + 1, left + 2) for top in (0, 4, 8) for left in (0, 8, 16)]
    assert list(windows.corners) == expected


def test_jitter_stays_in_bounds_and_is_keyed():
    grid, n = (40, 24), 3
    unjittered = local_windows(grid, n, key=None)
    size, pad = unjittered.size, unjittered.pad
    assert size == (13, 8) and pad == (1, 1)
    starts = [(t, c) for t in window_starts(40, 13) for c in window_starts(24, 8)]
    seen = set()
    for key in range(20):
        windows = local_windows(grid, n, key)
        assert windows == local_windows(grid, n, key)
        seen.add(windows.corners)
        for (top, left), (t0, c0) in zip(windows.corners, starts, strict=True):
            lo, hi = jitter_bounds(t0, 13, 40, 1)
            assert lo <= top - pad[0] - t0 <= hi
            lo, hi = jitter_bounds(c0, 8, 24, 1)
            assert lo <= left - pad[1] - c0 <= hi
    assert len(seen) > 10


def test_jitter_key_is_stable_and_distinguishes_every_field():
    base = jitter_key(123, 1, 10, 4)
    assert base == jitter_key(123, 1, 10, 4)
    others = {
        jitter_key(124, 1, 10, 4),
        jitter_key(123, 2, 10, 4),
        jitter_key(123, 1, 11, 4),
        jitter_key(123, 1, 10, 5),
    }
    assert base not in others and len(others) == 4
