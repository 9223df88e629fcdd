"""Writing a video as numbered image files (DIR/name_%05d.png or .tif) for compositing pipelines, each
frame written atomically; 8-bit PNG, 8- or 16-bit TIFF."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tifffile
from PIL import Image

from freescale.atomic_files import atomic_write
from freescale.config.video_outputs import VideoTarget, check_video_output, frame_path
from freescale.errors import ConfigError


def at_bit_depth(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    """uint8 or uint16 RGB at `bit_depth`, scaled so that white stays white (x 257 either way)."""
    if bit_depth == 8 and pixels.dtype == np.uint16:
        return np.round(pixels / 257.0).astype(np.uint8)
    if bit_depth == 16 and pixels.dtype == np.uint8:
        return pixels.astype(np.uint16) * 257
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"video frames must be uint8 or uint16 RGB, got {pixels.dtype}")
    return pixels


def write_frame_file(pixels: np.ndarray, path: str, overwrite: bool) -> None:
    def write(temporary: str) -> None:
        if path.lower().endswith(".png"):
            Image.fromarray(pixels, "RGB").save(temporary, format="PNG")
        else:
            tifffile.imwrite(temporary, pixels, photometric="rgb", compression="zlib")

    atomic_write(path, write, overwrite)


def write_frame_pattern(
    target: VideoTarget,
    frames: Iterable[tuple[np.ndarray, int]],
    frame_count: int,
    overwrite: bool = False,
) -> list[str]:
    """Write `frame_count` frames to target's numbered files 0..frame_count-1; the paths written.

    Every target file is checked before the first is written, so an existing frame stops the run early.
    """
    check_video_output(target.path, None, target.bit_depth, overwrite, frame_count)
    written = []
    for number, (pixels, _pts) in enumerate(frames):
        if number >= frame_count:
            raise ConfigError(f"frame pattern {target.path!r}: more frames than the {frame_count} announced")
        path = frame_path(target.path, number)
        write_frame_file(at_bit_depth(pixels, target.bit_depth), path, overwrite)
        written.append(path)
    if len(written) != frame_count:
        raise ConfigError(
            f"frame pattern {target.path!r}: {len(written)} frames given, {frame_count} announced"
        )
    return written
