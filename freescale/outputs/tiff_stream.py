"""Tiled, deflated TIFF from successive row strips: one row of 512-px tiles in memory; the pyramid's levels
are made as the rows pass, spooled to unnamed temporary files and written as SubIFDs after the main image."""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import BinaryIO

import numpy as np

from freescale.outputs import image_output
from freescale.outputs.image_output import TIFF_TILE, OutputOptions, halve, pyramid_shapes

Size = tuple[int, int]  # (H, W)

# tifffile's own level for compression="zlib": tiles compress to the bytes it would write from a whole array.
ZLIB_LEVEL = 6
# Rows halved at a time: bounds the float32 temporaries whatever the strip height (even, to keep row pairs).
HALVE_ROWS = 32


def write_tiff(
    strips: Iterator[np.ndarray],
    size: Size,
    dtype: np.dtype,
    path: str,
    text: str | None,
    options: OutputOptions,
) -> None:
    """Photometric RGB, 512-px tiles, deflate, the sRGB profile, DPI, the recipe as ImageDescription, BigTIFF
    only when the pixels (pyramid included) pass `BIGTIFF_ABOVE`, and the pyramid as SubIFDs."""
    import tifffile

    shapes = pyramid_shapes(size) if options.pyramid else []
    channels = options.channels
    samples = (channels,) if channels > 1 else ()  # a gray image is (H, W) to tifffile
    total = sum(h * w * channels * dtype.itemsize for h, w in [size, *shapes])
    common = {
        "photometric": "rgb" if channels >= 3 else "minisblack",
        "extrasamples": (2,) if options.mode in ("LA", "RGBA") else None,  # 2: unassociated alpha
        "tile": (TIFF_TILE, TIFF_TILE),
        "compression": "zlib",  # deflate; the tiles come compressed, this sets the tag
        "iccprofile": options.profile(),
        "resolution": (options.dpi, options.dpi) if options.dpi else None,
        "resolutionunit": "INCH" if options.dpi else None,
        "metadata": None,
    }
    directory = os.path.dirname(os.path.abspath(path))
    with ExitStack() as stack:
        # zlib releases the GIL, so a tile row's tiles compress in parallel.
        pool = stack.enter_context(ThreadPoolExecutor(os.cpu_count() or 1))
        spools = [stack.enter_context(tempfile.TemporaryFile(dir=directory)) for _ in shapes]
        tiff = stack.enter_context(tifffile.TiffWriter(path, bigtiff=total > image_output.BIGTIFF_ABOVE))
        rows = _spooling_pyramid(strips, _Pyramid(spools, shapes)) if shapes else strips
        tiles = _compressed_tiles(rows, size, dtype, pool, channels)
        tiff.write(
            tiles, shape=(*size, *samples), dtype=dtype, description=text, subifds=len(shapes) or None,
            **common,
        )  # fmt: skip
        for spool, shape in zip(spools, shapes, strict=True):
            level = _spooled_strips(spool, shape, dtype, channels)
            tiles = _compressed_tiles(level, shape, dtype, pool, channels)
            tiff.write(tiles, shape=(*shape, *samples), dtype=dtype, subfiletype=1, **common)


def _compressed_tiles(
    strips: Iterator[np.ndarray], size: Size, dtype: np.dtype, pool: ThreadPoolExecutor, channels: int = 3
) -> Iterator[bytes]:
    """Deflated tiles in TIFF order, zero-padded at the right and bottom as tifffile pads them.

    A tile row is compressed once its 512 rows have arrived. The last one waits until `strips` is
    exhausted: tifffile takes exactly as many tiles as the image has, so whatever `strips` runs at its end
    (checks, the pyramid's last rows) must have run before the last tile is handed over.
    """
    height, width = size
    across = -(-width // TIFF_TILE)
    # Tile-major, so that each tile is contiguous and compresses without a copy.
    band = np.zeros((across, TIFF_TILE, TIFF_TILE, channels), dtype)
    top = filled = 0  # the image row of the band's first row; rows of the band filled

    def compress(x: int) -> bytes:
        return zlib.compress(band[x], ZLIB_LEVEL)

    for strip in strips:
        used = 0
        while used < len(strip):
            n = min(TIFF_TILE - filled, len(strip) - used)
            for x in range(across):
                x0 = x * TIFF_TILE
                band[x, filled : filled + n, : width - x0] = strip[used : used + n, x0 : x0 + TIFF_TILE]
            filled, used = filled + n, used + n
            if filled == TIFF_TILE and top + TIFF_TILE < height:
                # Handed over as they finish; the band is refilled only after the row's last tile.
                yield from pool.map(compress, range(across))
                top, filled = top + TIFF_TILE, 0
        del strip  # the caller may free it before making the next
    if top + filled != height:
        raise ValueError(f"the strips hold {top + filled} rows, the image {height}")
    band[:, filled:] = 0  # below the image: zeros, like tifffile's padding
    yield from pool.map(compress, range(across))


class _Pyramid:
    """The pyramid's levels made from the main image's rows as they arrive: each level halves the rows of
    the one above (2x2 box mean, as `pyramid_levels`) and appends them to its spool file."""

    def __init__(self, spools: list[BinaryIO], shapes: list[Size]) -> None:
        self.spools, self.shapes = spools, shapes
        self.carry: list[np.ndarray | None] = [None] * len(shapes)  # an unpaired row waiting for the next
        self.rows = [0] * len(shapes)

    def push(self, rows: np.ndarray, level: int = 0) -> None:
        """Rows of level `level - 1` (0: the main image), in order."""
        if level == len(self.shapes) or not len(rows):
            return
        carry = self.carry[level]
        if carry is not None:
            self._add(level, halve(np.concatenate([carry, rows[:1]])))
            rows = rows[1:]
        even = len(rows) // 2 * 2
        # Copied: the caller may reuse the strip's memory once it is handed on.
        self.carry[level] = rows[even:].copy() if even < len(rows) else None
        for start in range(0, even, HALVE_ROWS):
            self._add(level, halve(rows[start : min(start + HALVE_ROWS, even)]))

    def _add(self, level: int, half: np.ndarray) -> None:
        self.spools[level].write(memoryview(np.ascontiguousarray(half)).cast("B"))
        self.rows[level] += len(half)
        self.push(half, level + 1)

    def finish(self) -> None:
        """After the last row: an odd last row of a level is dropped (`halve` does the same)."""
        if self.rows != [h for h, _ in self.shapes]:
            raise AssertionError(f"pyramid rows {self.rows} differ from the levels' {self.shapes}")
        for spool in self.spools:
            spool.flush()


def _spooling_pyramid(strips: Iterator[np.ndarray], pyramid: _Pyramid) -> Iterator[np.ndarray]:
    for strip in strips:
        pyramid.push(strip)
        yield strip
        del strip
    pyramid.finish()


def _spooled_strips(spool: BinaryIO, shape: Size, dtype: np.dtype, channels: int = 3) -> Iterator[np.ndarray]:
    """A spooled level read back 512 rows at a time (one tile row: no more is ever needed at once)."""
    height, width = shape
    spool.seek(0)
    for top in range(0, height, TIFF_TILE):
        rows = np.empty((min(TIFF_TILE, height - top), width, channels), dtype)
        if spool.readinto(memoryview(rows).cast("B")) != rows.nbytes:
            raise OSError("a pyramid level's temporary file is shorter than the level")
        yield rows
