"""Integer geometry of diffusers' tiled VAE decode/encode and of bicubic resizing along the row axis: which
tiles and source rows a band of output rows depends on."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

Span = tuple[int, int]  # [start, stop)


@dataclass(frozen=True)
class AxisTile:
    """One tile along an axis of diffusers' tiled decode/encode (tile row i or tile column j)."""

    index: int
    in_start: int  # first input row the tile reads
    in_stop: int  # one past the last input row it reads (the tile is cut short at the border)
    out_len: int  # rows the tile's decoder/encoder output has
    out_start: int  # where its kept rows land in the stitched result
    kept: int  # rows kept after diffusers' `[:row_limit]` crop
    blend: int  # rows blended with the previous tile (diffusers clamps the extent to both tiles' sizes)


def tile_starts(length: int, overlap_size: int) -> list[int]:
    """Tile starts exactly as diffusers' loops: `range(0, length, overlap_size)`."""
    return list(range(0, length, overlap_size))


def axis_tiles(
    length: int,
    tile_size: int,
    overlap_size: int,
    blend_extent: int,
    row_limit: int,
    out_len: Callable[[int], int],
) -> list[AxisTile]:
    """All tiles along an axis of `length` input rows; `out_len` maps a tile's input length to output rows."""
    tiles: list[AxisTile] = []
    out_start, prev_len = 0, 0
    for index, start in enumerate(tile_starts(length, overlap_size)):
        stop = min(start + tile_size, length)
        n = out_len(stop - start)
        blend = min(prev_len, n, blend_extent) if index else 0
        kept = min(row_limit, n)
        tiles.append(AxisTile(index, start, stop, n, out_start, kept, blend))
        out_start += kept
        prev_len = n
    return tiles


def decode_axis_tiles(
    latent_len: int, tile_latent_min_size: int, tile_sample_min_size: int, overlap_factor: float = 0.25
) -> list[AxisTile]:
    """Tiles of `AutoencoderKL.tiled_decode` along one axis; the decoder upsamples by sample/latent size."""
    # Same float expressions as diffusers so that int() truncates identically.
    overlap_size = int(tile_latent_min_size * (1 - overlap_factor))
    blend_extent = int(tile_sample_min_size * overlap_factor)
    row_limit = tile_sample_min_size - blend_extent
    factor = tile_sample_min_size // tile_latent_min_size
    return axis_tiles(
        latent_len, tile_latent_min_size, overlap_size, blend_extent, row_limit, lambda n: n * factor
    )


def encode_axis_tiles(
    image_len: int, tile_sample_min_size: int, tile_latent_min_size: int, overlap_factor: float = 0.25
) -> list[AxisTile]:
    """Tiles of `AutoencoderKL._tiled_encode` along one axis.

    Each of the encoder's stride-2 downsamplers (pad right/bottom by one, 3x3 conv) maps n rows to n // 2,
    so a tile of n pixels gives n // factor latent rows.
    """
    overlap_size = int(tile_sample_min_size * (1 - overlap_factor))
    blend_extent = int(tile_latent_min_size * overlap_factor)
    row_limit = tile_latent_min_size - blend_extent
    factor = tile_sample_min_size // tile_latent_min_size
    return axis_tiles(
        image_len, tile_sample_min_size, overlap_size, blend_extent, row_limit, lambda n: n // factor
    )


def stitched_length(tiles: list[AxisTile]) -> int:
    return tiles[-1].out_start + tiles[-1].kept if tiles else 0


def kept_rows(tile: AxisTile, out_rows: Span) -> Span:
    """The stitched rows of `out_rows` that `tile`'s kept part supplies; empty (lo >= hi) when none."""
    return max(out_rows[0], tile.out_start), min(out_rows[1], tile.out_start + tile.kept)


def contributing_tiles(tiles: list[AxisTile], out_rows: Span) -> Span:
    """Tile indices [t0, t1) to run, in order with their blends, to get stitched rows `out_rows` exactly.

    A kept row inside a tile's blend zone also needs the previous tile's bottom rows, which in turn may
    lie in that tile's own blend zone, so the dependency is followed down until it stops.
    """
    o0, o1 = out_rows
    total = stitched_length(tiles)
    if not 0 <= o0 < o1 <= total:
        raise ValueError(f"rows {out_rows} are not a non-empty range inside [0, {total})")
    need: dict[int, Span] = {}
    for t in tiles:
        lo, hi = max(o0, t.out_start), min(o1, t.out_start + t.kept)
        if lo < hi:
            need[t.index] = (lo - t.out_start, hi - t.out_start)
    t1 = max(need) + 1
    t = t1 - 1
    while t > 0 and t in need:
        lo, hi = need[t]
        blend = tiles[t].blend
        if lo >= blend:
            break
        prev = tiles[t - 1]
        # blend_v reads the previous tile's rows [len - blend + y) for blended rows y.
        a_lo, a_hi = prev.out_len - blend + lo, prev.out_len - blend + min(hi, blend)
        if t - 1 in need:
            a_lo, a_hi = min(a_lo, need[t - 1][0]), max(a_hi, need[t - 1][1])
        need[t - 1] = (a_lo, a_hi)
        t -= 1
    return (min(need), t1)


def tiles_input_rows(tiles: list[AxisTile], tile_span: Span) -> Span:
    """Input rows [start, stop) read by tiles [t0, t1)."""
    t0, t1 = tile_span
    return (tiles[t0].in_start, max(t.in_stop for t in tiles[t0:t1]))


def _bicubic_floor_indices(out_rows: Span, in_len: int, out_len: int) -> tuple[int, int]:
    """floor(src) of the first and last output row, in ATen's float32 arithmetic.

    The scale is in/out rounded to float32 (no scale_factor is passed when `size=` is given), and x86 builds
    fuse `scale * (dst + 0.5) - 0.5` into one FMA: a double evaluation rounded once reproduces it exactly.
    """
    scale = _f32(_f32(in_len) / _f32(out_len))

    def index(o: int) -> int:
        return min(math.floor(_f32(scale * _f32(o + 0.5) - 0.5)), in_len - 1)

    return index(out_rows[0]), index(out_rows[1] - 1)


def bicubic_source_rows(out_rows: tuple[int, int], in_len: int, out_len: int) -> tuple[int, int]:
    """Source rows [s0, s1) (clamped to [0, in_len)) that bicubic output rows [o0, o1) read."""
    o0, o1 = out_rows
    if not 0 <= o0 < o1 <= out_len:
        raise ValueError(f"rows {out_rows} are not a non-empty range inside [0, {out_len})")
    # The source index is monotone in the output row, so the two ends bound every tap.
    first, last = _bicubic_floor_indices(out_rows, in_len, out_len)
    return (min(max(first - 1, 0), in_len - 1), min(max(last + 2, 0), in_len - 1) + 1)


def _f32(x: float) -> float:
    """Round a Python float to the nearest float32, to mirror ATen's float arithmetic for fp32 images."""
    return struct.unpack("f", struct.pack("f", x))[0]
