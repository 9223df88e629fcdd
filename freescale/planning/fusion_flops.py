"""FLOPs of one scale-fusion self-attention layer on one rank's band, in torch FlopCounterMode's convention
(a multiply-add is 2 FLOPs, biases and softmax are free), from the geometry alone."""

from __future__ import annotations

from freescale.tiling.bands import Band, blur_reads, clip
from freescale.tiling.windows import LocalWindows, blur_kernel_size, windows_touching_rows


def _count(start: int, stop: int, step: int) -> int:
    """len(range(start, stop, step))."""
    return max(0, -(-(stop - start) // step))


def subgrid_pairs(grid: tuple[int, int], band: Band, counts: tuple[int, int]) -> int:
    """Query-key token pairs of fast mode's global branch: the band's tokens of each strided sub-grid
    x[a::n_h, b::n_w] against all of that sub-grid's tokens."""
    (h, w), (first, stop), (nh, nw) = grid, band, counts
    pairs = 0
    for a in range(nh):
        query_rows = _count((a - first) % nh, stop - first, nh)
        key_rows = _count(a, h, nh)
        for b in range(nw):
            cols = _count(b, w, nw)
            pairs += query_rows * cols * key_rows * cols
    return pairs


def fusion_flops(
    grid: tuple[int, int],
    band: Band,
    windows: LocalWindows,
    counts: tuple[int, int],
    fast_mode: bool,
    blur_channels: bool,
    batch: int,
    dims: tuple[int, int, int],
) -> tuple[int, int]:
    """(attention FLOPs, dense FLOPs) of ScaleFusionProcessor on `band` (rows of the level's token grid).

    dims = (query, inner, out) widths. Attention: every local window touching the band, and the band's
    queries against the whole grid (or its sub-grids); dense: q/k/v projections of the grid rows those
    windows cover (real tokens only: the padding around them is not projected), both output projections,
    and the separable blur of the band plus its halo.
    """
    (h, w), (a, b) = grid, band
    query_dim, inner, out_dim = dims
    reach = windows_touching_rows(windows, band)
    lo, hi = clip(reach.rows, h)
    window_tokens = windows.size[0] * windows.size[1]
    dense = 3 * 2 * batch * (hi - lo) * w * query_dim * inner
    attention = 4 * batch * len(reach.windows.corners) * window_tokens * window_tokens * inner
    if fast_mode:
        attention += 4 * batch * inner * subgrid_pairs(grid, band, counts)
    else:
        attention += 4 * batch * (b - a) * w * h * w * inner
    dense += 2 * (2 * batch * (b - a) * w * inner * out_dim)
    kernel = blur_kernel_size(max(counts))
    if kernel > 1:  # a 1-tap G is the identity: no blur is run
        lo, hi = clip(blur_reads([band], kernel)[0], h)
        rows = hi - lo
        lengths = (out_dim if blur_channels else 0) + w + rows
        dense += 2 * batch * rows * w * out_dim * lengths
    return attention, dense


def self_attention_flops(tokens: int, batch: int, dims: tuple[int, int, int]) -> tuple[int, int]:
    """(attention, dense) FLOPs of a plain self-attention layer over `tokens` tokens (the base stage)."""
    query_dim, inner, out_dim = dims
    dense = 3 * 2 * batch * tokens * query_dim * inner + 2 * batch * tokens * inner * out_dim
    return 4 * batch * tokens * tokens * inner, dense
