"""Writing outputs atomically, with their recipe: PNG/JPEG/TIFF (tiled, deflate, 8 or 16 bit, DPI, sRGB ICC
profile, BigTIFF only when needed, optional pyramid); the writers are streaming_output and its formats."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import ImageCms

from freescale.atomic_files import atomic_write

TIFF_TILE = 512
# Classic TIFF addresses 4 GB; leave room for tags, tile tables and the pyramid's levels.
BIGTIFF_ABOVE = 2**32 - 2**27


@dataclass(frozen=True)
class OutputOptions:
    dpi: int | None = None
    pyramid: bool = False
    mode: str = "RGB"  # the pixels' channels: one of OUTPUT_MODES (an upscale keeps its input's)
    icc_profile: bytes | None = None  # None: sRGB; b"": none (an untagged gray image)

    @property
    def channels(self) -> int:
        return OUTPUT_MODES.index(self.mode) + 1

    def profile(self) -> bytes | None:
        """The ICC profile the file embeds, or None for none."""
        return srgb_profile() if self.icc_profile is None else (self.icc_profile or None)


OUTPUT_MODES = ("L", "LA", "RGB", "RGBA")  # by channel count


@cache
def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def halve(level: np.ndarray) -> np.ndarray:
    """2x2 box mean, rounded, in the level's dtype; an odd last row or column is dropped.

    Sums of four uint16 values are exact in float32, so halving any even run of rows separately gives the
    same pixels as halving the whole level.
    """
    h, w = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
    quads = level[:h, :w].astype(np.float32).reshape(h // 2, 2, w // 2, 2, -1).mean(axis=(1, 3))
    return np.round(quads).astype(level.dtype)


def pyramid_shapes(size: tuple[int, int], smallest: int = TIFF_TILE) -> list[tuple[int, int]]:
    """(H, W) of each pyramid level below `size`, as `pyramid_levels` makes them."""
    shapes, (h, w) = [], size
    while max(h, w) > smallest:
        h, w = h // 2, w // 2
        shapes.append((h, w))
    return shapes


def pyramid_levels(pixels: np.ndarray, smallest: int = TIFF_TILE) -> list[np.ndarray]:
    """Half-size reductions (2x2 box mean) until the longer side fits in one tile."""
    levels, level = [], pixels
    for _ in pyramid_shapes(pixels.shape[:2], smallest):
        level = halve(level)
        levels.append(level)
    return levels


def sidecar_path(path: str) -> str:
    """out.png -> out.png.json: the recipe next to the image (the full name, so out.tif has its own)."""
    return path + ".json"


def write_sidecar(path: str, recipe: dict) -> None:
    """The recipe of the image at `path`, as indented JSON beside it."""

    def write_json(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(recipe, sort_keys=True, indent=2) + "\n")

    # The sidecar describes the image just written, so it replaces any stale one (the CLI refuses
    # up front to touch a user's existing files without --overwrite).
    atomic_write(sidecar_path(path), write_json)


class PlacedSidecar:
    """A recipe put beside an image that is not in place yet: `undo` puts back what was there before (the
    old sidecar, or nothing), `keep` drops that backup once the image stands."""

    def __init__(self, path: str, recipe: dict) -> None:
        self.sidecar = sidecar_path(path)
        self.backup: str | None = None
        if os.path.isfile(self.sidecar):
            # A second name for the old recipe: it stays in place until the new one atomically replaces it.
            fd, backup = tempfile.mkstemp(
                prefix=".freescale-", suffix=".json", dir=os.path.dirname(path) or "."
            )
            os.close(fd)
            os.unlink(backup)
            os.link(self.sidecar, backup)
            self.backup = backup
        try:
            write_sidecar(path, recipe)
        except BaseException:
            self.undo()
            raise

    def undo(self) -> None:
        if self.backup is not None:
            os.replace(self.backup, self.sidecar)
            self.backup = None
        elif os.path.lexists(self.sidecar):
            os.unlink(self.sidecar)

    def keep(self) -> None:
        if self.backup is not None:
            os.unlink(self.backup)
            self.backup = None


def save_image(
    pixels: np.ndarray,
    path: str,
    overwrite: bool = False,
    recipe: dict | None = None,
    options: OutputOptions = OutputOptions(),
) -> None:
    """Write (H, W, 3) uint8 or uint16 pixels, embedding the recipe and writing it beside as JSON.

    The whole image as one strip of the streaming writer, so both paths write the same files.
    """
    # Imported here: streaming_output builds on this module's helpers.
    from freescale.outputs.streaming_output import write_image_strips

    write_image_strips([pixels], pixels.shape[:2], pixels.dtype, path, overwrite, recipe, options)


def stage_path(path: str, stage: int, size: tuple[int, int]) -> str:
    """Where `--save-stages` writes stage k: out.png -> out.stage0-1024x1024.png."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.stage{stage}-{size[1]}x{size[0]}{ext}"
