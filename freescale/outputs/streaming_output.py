"""Writing an image given as successive row strips, top to bottom, without ever holding it whole (TIFF, PNG);
JPEG, a preview format with no streaming encoder in Pillow, assembles the image first."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from freescale.atomic_files import atomic_write
from freescale.config.video_outputs import check_new_output
from freescale.errors import ConfigError
from freescale.outputs.image_output import (
    OutputOptions,
    PlacedSidecar,
)

Size = tuple[int, int]  # (H, W)
Writer = Callable[[Iterator[np.ndarray], Size, np.dtype, str, str | None, OutputOptions], None]


def write_image_strips(
    strips: Iterable[np.ndarray],
    size: Size,
    dtype: np.dtype | type,
    path: str,
    overwrite: bool = False,
    recipe: dict | None = None,
    options: OutputOptions | None = None,
) -> None:
    """Write the (H, W, 3) image of `size` = (H, W) from `strips`: arrays (rows, W, 3) of `dtype` in order
    from the top, of any heights (empty ones allowed) summing to H. uint8, or uint16 for TIFF and PNG.

    Like `save_image`: atomic (a temporary beside `path`, linked into place, or replacing it only with
    `overwrite`; on any failure, the strips' own included, no file is left), the recipe embedded and
    written beside as JSON, in place before the image is (a failure in between puts back the old one).
    `strips` is consumed once; no reference to a strip is kept once the next is asked for. Memory held
    besides the caller's strip: TIFF one row of 512-px tiles (512 x W x 3 samples)
    and that row's compressed tiles in flight (at most as much again); the pyramid's levels are made as
    rows pass, spooled to unnamed temporary files beside `path` and written after the main image 512 rows
    at a time. PNG about 4 MB of filter temporaries and zlib's state. JPEG the whole image.
    """
    options = options or OutputOptions()
    dtype = np.dtype(dtype)
    ext = os.path.splitext(path)[1].lower()
    writer = _writer(ext, dtype)
    height, width = size
    if height <= 0 or width <= 0:
        raise ValueError(f"image size {size} is empty")
    check_new_output(path, overwrite)
    text = json.dumps(recipe, sort_keys=True) if recipe is not None else None
    checked = _checked_strips(strips, (height, width), dtype, options.channels)
    placed: list[PlacedSidecar] = []

    def write(temporary: str) -> None:
        writer(checked, (height, width), dtype, temporary, text, options)
        if recipe is not None:  # the recipe stands before its image does, so no image is without one
            placed.append(PlacedSidecar(path, recipe))

    try:
        atomic_write(path, write, overwrite)
    except BaseException:
        for sidecar in placed:
            sidecar.undo()  # the image did not land: neither does its recipe
        raise
    for sidecar in placed:
        sidecar.keep()


def _writer(ext: str, dtype: np.dtype) -> Writer:
    from freescale.outputs.png_stream import write_png
    from freescale.outputs.tiff_stream import write_tiff

    if dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be uint8 or uint16, not {dtype}")
    if ext in (".tif", ".tiff"):
        return write_tiff
    if ext == ".png":
        return write_png
    if ext in (".jpg", ".jpeg"):
        if dtype != np.uint8:
            raise ConfigError("16-bit pixels need a .tif/.tiff or .png output, not JPEG")
        return _write_jpeg
    raise ConfigError(f"unknown image extension {ext!r}")


def _checked_strips(
    strips: Iterable[np.ndarray], size: Size, dtype: np.dtype, channels: int = 3
) -> Iterator[np.ndarray]:
    """The non-empty strips, each checked as it arrives, and a check at the end that they filled `size`."""
    height, width = size
    done = 0
    for strip in strips:
        shape = (width, channels)
        if not isinstance(strip, np.ndarray) or strip.dtype != dtype or strip.shape[1:] != shape:
            got = (getattr(strip, "shape", None), getattr(strip, "dtype", type(strip)))
            raise ValueError(f"a strip must be an array (rows, {width}, {channels}) of {dtype}, got {got}")
        if done + len(strip) > height:
            raise ValueError(f"the strips hold more than the image's {height} rows")
        done += len(strip)
        if len(strip):
            yield strip
        del strip  # the caller may free it before making the next
    if done != height:
        raise ValueError(f"the strips hold {done} rows, the image {height}")


def _write_jpeg(
    strips: Iterator[np.ndarray],
    size: Size,
    dtype: np.dtype,
    path: str,
    text: str | None,
    options: OutputOptions,
) -> None:
    """JPEG holds the whole image: Pillow has no incremental JPEG encoder (JPEG is a preview format)."""
    pixels = np.empty((*size, options.channels), dtype)
    top = 0
    for strip in strips:
        pixels[top : top + len(strip)] = strip
        top += len(strip)
        del strip
    extra = {"icc_profile": options.profile()} if options.profile() else {}
    if options.dpi:
        extra["dpi"] = (options.dpi, options.dpi)
    image = Image.fromarray(pixels[..., 0] if options.channels == 1 else pixels)  # JPEG: L or RGB
    image.save(path, format="JPEG", quality=95, comment=(text or "").encode(), **extra)
