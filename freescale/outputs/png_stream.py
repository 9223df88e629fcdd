"""PNG written by hand from successive row strips: the chunks Pillow writes (IHDR, iCCP, text, pHYs), then
IDAT chunks from one zlib stream fed a few rows at a time, so only those rows and the row above are held."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import numpy as np

from freescale.outputs.image_output import OutputOptions

Size = tuple[int, int]  # (H, W)

SIGNATURE = b"\x89PNG\r\n\x1a\n"
RECIPE_KEY = b"freescale-recipe"
ZLIB_LEVEL = 6  # Pillow's default compress_level
# Bytes of rows filtered at a time: bounds the temporaries (about 16 times this) whatever the strip height.
FILTER_BYTES = 1 << 18
COLOUR_TYPES = {"L": 0, "LA": 4, "RGB": 2, "RGBA": 6}  # PNG's colour type of each output mode


def write_png(
    strips: Iterator[np.ndarray],
    size: Size,
    dtype: np.dtype,
    path: str,
    text: str | None,
    options: OutputOptions,
) -> None:
    """8-bit RGB, or 16-bit RGB (big-endian samples) for uint16; Pillow reads back the same pixels (8-bit),
    `info["icc_profile"]`, `info["dpi"]` and the recipe under "freescale-recipe"."""
    height, width = size
    depth = 8 * dtype.itemsize
    with open(path, "wb") as fh:
        fh.write(SIGNATURE)
        colour_type = COLOUR_TYPES[options.mode]
        _chunk(fh, b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0))
        if profile := options.profile():
            # As Pillow writes it: a profile name, a separator, compression method 0, the zlib'd profile.
            _chunk(fh, b"iCCP", b"ICC Profile\0\0" + zlib.compress(profile))
        if text is not None:
            _chunk(fh, *_text_chunk(text))
        if options.dpi:
            per_metre = int(options.dpi / 0.0254 + 0.5)  # Pillow's rounding
            _chunk(fh, b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1))
        compressor = zlib.compressobj(ZLIB_LEVEL)
        pixel_bytes = options.channels * dtype.itemsize
        above = np.zeros(width * pixel_bytes, np.uint8)  # the filter sees zeros above the first row
        step = max(1, FILTER_BYTES // above.size)
        for strip in strips:
            for start in range(0, len(strip), step):
                raw = _row_bytes(strip[start : start + step])
                # An IDAT chunk for each piece zlib hands back (it buffers up to ~64 KB itself).
                if data := compressor.compress(_filtered(raw, above, pixel_bytes)):
                    _chunk(fh, b"IDAT", data)
                above = raw[-1].copy()
            del strip, raw  # both hold the strip, which the caller may free before making the next
        _chunk(fh, b"IDAT", compressor.flush())
        _chunk(fh, b"IEND", b"")


def _chunk(fh, kind: bytes, data: bytes) -> None:
    fh.write(struct.pack(">I", len(data)) + kind)
    fh.write(data)
    fh.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _text_chunk(text: str) -> tuple[bytes, bytes]:
    """tEXt when the text is Latin-1, else uncompressed iTXt (UTF-8), as Pillow's `PngInfo.add_text` does."""
    try:
        return b"tEXt", RECIPE_KEY + b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        # key, separator, compression flag 0, method 0, empty language tag and translated key
        return b"iTXt", RECIPE_KEY + b"\0\0\0\0\0" + text.encode("utf-8")


def _row_bytes(rows: np.ndarray) -> np.ndarray:
    """(n, W, 3) pixels -> (n, W * 3 * itemsize) bytes in PNG's order (16-bit samples are big-endian)."""
    if rows.dtype.itemsize > 1:
        rows = rows.astype(">u2")
    return np.ascontiguousarray(rows).view(np.uint8).reshape(len(rows), -1)


def _filtered(raw: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """Rows filtered as libpng's adaptive choice does: per row, of PNG's five filters, the one whose output
    bytes, read as signed, have the least absolute sum; each row is led by its filter-type byte.

    uint8 arithmetic is modulo 256 as PNG's is; only Paeth's distances need int16.
    """
    up = np.concatenate([above[None], raw[:-1]])
    left = np.zeros_like(raw)  # zeros before the first pixel, as PNG defines
    left[:, bpp:] = raw[:, :-bpp]
    up_left = np.zeros_like(raw)
    up_left[:, bpp:] = up[:, :-bpp]
    p, q = up.astype(np.int16) - up_left, left.astype(np.int16) - up_left
    pa, pb, pc = np.abs(p), np.abs(q), np.abs(p + q)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    del p, q, pa, pb, pc
    average = (left & up) + ((left ^ up) >> 1)  # floor((left + up) / 2) without overflow
    out = np.empty((len(raw), raw.shape[1] + 1), np.uint8)
    best = np.full(len(raw), np.iinfo(np.int64).max)
    # Filter types 0 (none), 1 (sub), 2 (up), 3 (average), 4 (Paeth); ties keep the lower type.
    for kind, predictor in enumerate((None, left, up, average, paeth)):
        residual = raw if predictor is None else raw - predictor
        cost = np.minimum(residual, 0 - residual).sum(axis=1, dtype=np.int64)  # |byte as int8|
        better = cost < best
        best = np.where(better, cost, best)
        out[better, 0] = kind
        out[better, 1:] = residual[better]
    return out
