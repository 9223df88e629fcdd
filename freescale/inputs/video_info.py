"""What a video file holds, read before decoding any frame: size, frame timing, rotation, colour, audio."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

# FFmpeg's colour enums (AVColorRange, AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic).
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2
BT709 = 1
UNSPECIFIED = 2
MATRIX_RGB = 0


@dataclass(frozen=True)
class ColourInfo:
    """The colour tags of a stream, as FFmpeg's enum values (2 = unspecified for the last three)."""

    range: int = RANGE_UNSPECIFIED
    matrix: int = UNSPECIFIED
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED


# What a new video (text-to-video) is tagged with: HD video's usual BT.709, limited range.
BT709_LIMITED = ColourInfo(range=RANGE_LIMITED, matrix=BT709, primaries=BT709, transfer=BT709)


@dataclass(frozen=True)
class AudioStreamInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class VideoInfo:
    """A video's stream as the container describes it; `pts` are the frames' presentation timestamps in
    `time_base`, in presentation order (irregular for variable frame rate)."""

    path: str
    width: int
    height: int
    frame_count: int
    time_base: Fraction
    average_rate: Fraction | None
    pts: tuple[int, ...]
    rotation: int
    colour: ColourInfo
    bit_depth: int
    pixel_format: str
    codec: str
    audio: tuple[AudioStreamInfo, ...]
