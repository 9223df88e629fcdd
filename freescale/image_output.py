"""Writing outputs atomically, with their recipe: PNG/JPEG through Pillow, print-ready TIFF through tifffile
(tiled, deflate, 8 or 16 bit, DPI, sRGB ICC profile, BigTIFF only when needed, optional pyramid)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageCms, PngImagePlugin

from freescale.errors import ConfigError

TIFF_TILE = 512
# Classic TIFF addresses 4 GB; leave room for tags, tile tables and the pyramid's levels.
BIGTIFF_ABOVE = 2**32 - 2**27


@dataclass(frozen=True)
class OutputOptions:
    dpi: int | None = None
    pyramid: bool = False


@cache
def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def pyramid_levels(pixels: np.ndarray, smallest: int = TIFF_TILE) -> list[np.ndarray]:
    """Half-size reductions (2x2 box mean) until the longer side fits in one tile."""
    levels, level = [], pixels
    while max(level.shape[:2]) > smallest:
        h, w = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
        quads = level[:h, :w].astype(np.float32).reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
        level = np.round(quads).astype(pixels.dtype)
        levels.append(level)
    return levels


def _write_tiff(pixels: np.ndarray, path: str, text: str | None, options: OutputOptions) -> None:
    import tifffile

    levels = pyramid_levels(pixels) if options.pyramid else []
    total = pixels.nbytes + sum(level.nbytes for level in levels)
    common = {
        "photometric": "rgb",
        "tile": (TIFF_TILE, TIFF_TILE),
        "compression": "zlib",  # deflate
        "iccprofile": srgb_profile(),
        "resolution": (options.dpi, options.dpi) if options.dpi else None,
        "resolutionunit": "INCH" if options.dpi else None,
        "metadata": None,
    }
    with tifffile.TiffWriter(path, bigtiff=total > BIGTIFF_ABOVE) as tiff:
        tiff.write(pixels, description=text, subifds=len(levels) or None, **common)
        for level in levels:
            tiff.write(level, subfiletype=1, **common)


def _write(pixels: np.ndarray, path: str, text: str | None, options: OutputOptions) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext in (".tif", ".tiff"):
        _write_tiff(pixels, path, text, options)
        return
    image = Image.fromarray(pixels)
    extra = {"icc_profile": srgb_profile()}
    if options.dpi:
        extra["dpi"] = (options.dpi, options.dpi)
    if ext == ".png":
        info = PngImagePlugin.PngInfo()
        if text:
            info.add_text("freescale-recipe", text)
        image.save(path, format="PNG", pnginfo=info, **extra)
    elif ext in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=95, comment=(text or "").encode(), **extra)
    else:
        raise ConfigError(f"unknown image extension {ext!r}")


def _atomic(path: str, overwrite: bool, write) -> None:
    """Run write(temporary) and move the result to `path`: never a partial file, never a silent replace."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".freescale-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        write(temporary)
        if overwrite:
            os.replace(temporary, path)
        else:
            # link() fails if the name exists, so a file that appeared meanwhile is never clobbered.
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise ConfigError(f"output {path!r} already exists; pass --overwrite to replace it") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def sidecar_path(path: str) -> str:
    """out.png -> out.png.json: the recipe next to the image (the full name, so out.tif has its own)."""
    return path + ".json"


def save_image(
    pixels: np.ndarray,
    path: str,
    overwrite: bool = False,
    recipe: dict | None = None,
    options: OutputOptions = OutputOptions(),
) -> None:
    """Write (H, W, 3) uint8 or uint16 pixels, embedding the recipe and writing it beside as JSON."""
    text = json.dumps(recipe, sort_keys=True) if recipe is not None else None
    _atomic(path, overwrite, lambda temporary: _write(pixels, temporary, text, options))
    if text is not None:

        def write_json(temporary: str) -> None:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(recipe, sort_keys=True, indent=2) + "\n")

        # The sidecar describes the image just written, so it replaces any stale one (the CLI refuses
        # up front to touch a user's existing files without --overwrite).
        _atomic(sidecar_path(path), True, write_json)


def stage_path(path: str, stage: int, size: tuple[int, int]) -> str:
    """Where `--save-stages` writes stage k: out.png -> out.stage0-1024x1024.png."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.stage{stage}-{size[1]}x{size[0]}{ext}"
