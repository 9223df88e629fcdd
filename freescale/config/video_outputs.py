"""Checking a video output path and its options before any model loads (part of validating a config):
the extension, the codec it allows, the bit depth, the directory and an existing output."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from freescale.errors import ConfigError

# Per container: the codecs allowed (the first is the default) and the bit depths it can be fed.
CONTAINER_CODECS = {".mp4": ("h264", "h265"), ".mov": ("prores", "prores4444"), ".mkv": ("ffv1",)}
CONTAINER_BIT_DEPTHS = {".mp4": (8,), ".mov": (8, 16), ".mkv": (8, 16)}
PATTERN_BIT_DEPTHS = {".png": (8,), ".tif": (8, 16), ".tiff": (8, 16)}
FRAME_NUMBER = re.compile(r"%0(\d)d")


def check_new_output(path: str, overwrite: bool) -> None:
    """Refuse up front an existing output (the final link refuses it again, race-free)."""
    if not overwrite and os.path.lexists(path):
        raise ConfigError(f"output {path!r} already exists; pass --overwrite to replace it")


@dataclass(frozen=True)
class VideoTarget:
    """A checked output: a container file (`codec` set) or a frame pattern (`codec` None)."""

    path: str
    extension: str
    codec: str | None
    bit_depth: int

    @property
    def is_pattern(self) -> bool:
        return self.codec is None


def frame_path(pattern: str, number: int) -> str:
    """DIR/name_%05d.png, 7 -> DIR/name_00007.png."""
    return FRAME_NUMBER.sub(lambda match: f"{number:0{match.group(1)}d}", pattern, count=1)


def check_video_output(
    path: str,
    codec: str | None = None,
    bit_depth: int = 8,
    overwrite: bool = False,
    frame_count: int | None = None,
) -> VideoTarget:
    """Refuse (one-line ConfigError) an output the writer could not make; for a frame pattern with a
    known `frame_count`, any existing frame file without `overwrite`."""
    extension = os.path.splitext(path)[1].lower()
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"output directory {directory!r} does not exist")
    numbers = FRAME_NUMBER.findall(os.path.basename(path))
    if numbers or extension in PATTERN_BIT_DEPTHS:
        return check_pattern(path, extension, len(numbers), codec, bit_depth, overwrite, frame_count)
    if extension not in CONTAINER_CODECS:
        raise ConfigError(
            f"video output {path!r}: unknown extension {extension!r}; use .mp4, .mov, .mkv or a frame "
            "pattern such as DIR/name_%05d.png or .tif"
        )
    allowed = CONTAINER_CODECS[extension]
    codec = codec or allowed[0]
    if codec not in allowed:
        allowed_list = ", ".join(allowed)
        raise ConfigError(f"--codec {codec!r} cannot be written to {extension}; allowed: {allowed_list}")
    if bit_depth not in CONTAINER_BIT_DEPTHS[extension]:
        raise ConfigError(
            f"--bit-depth {bit_depth} is not allowed for {extension}; allowed: "
            f"{', '.join(map(str, CONTAINER_BIT_DEPTHS[extension]))}"
        )
    check_new_output(path, overwrite)
    return VideoTarget(path, extension, codec, bit_depth)


def check_pattern(
    path: str,
    extension: str,
    numbers: int,
    codec: str | None,
    bit_depth: int,
    overwrite: bool,
    frame_count: int | None,
) -> VideoTarget:
    if numbers != 1 or extension not in PATTERN_BIT_DEPTHS:
        raise ConfigError(
            f"frame pattern {path!r}: needs exactly one %0Nd in the file name and a .png or .tif extension"
        )
    if codec is not None:
        raise ConfigError(f"--codec {codec!r} does not apply to a frame pattern ({path!r})")
    if bit_depth not in PATTERN_BIT_DEPTHS[extension]:
        raise ConfigError(f"--bit-depth {bit_depth} is not allowed for {extension} frames; use .tif for 16")
    if frame_count is not None and not overwrite:
        for number in range(frame_count):
            check_new_output(frame_path(path, number), overwrite)
    return VideoTarget(path, extension, None, bit_depth)
