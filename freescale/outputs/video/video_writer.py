"""Encoding a video fed one frame at a time: MP4 (H.264/H.265 yuv420p), MOV (ProRes 422 HQ or 4444),
MKV (FFV1, lossless RGB) or a frame pattern, with the caller's pts and time base (never regenerated from
a frame rate), rotation and colour tags, the input's audio remuxed, the recipe in the metadata and beside;
written atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import numpy as np

from freescale.atomic_files import atomic_write
from freescale.config.video_outputs import VideoTarget, check_video_output
from freescale.errors import ConfigError
from freescale.inputs.video_info import (
    BT709_LIMITED,
    MATRIX_RGB,
    RANGE_FULL,
    RANGE_LIMITED,
    UNSPECIFIED,
    ColourInfo,
    VideoInfo,
)
from freescale.outputs.image_output import write_sidecar
from freescale.outputs.video.audio_remux import MUXERS, AudioRemuxer, check_audio_fits
from freescale.outputs.video.frame_patterns import at_bit_depth, write_frame_pattern

DEFAULT_CRF = {"h264": 18, "h265": 20}


@dataclass(frozen=True)
class CodecSetup:
    encoder: str
    pixel_format: str
    options: dict
    rgb: bool  # coded as RGB: the matrix tag is RGB and the range full, whatever the source had
    limited_only: bool = False  # ProRes is video range by definition: full-range input is converted


def codec_setup(target: VideoTarget, crf: int | None) -> CodecSetup:
    if target.codec in DEFAULT_CRF:
        options = {"crf": str(DEFAULT_CRF[target.codec] if crf is None else crf)}
        if target.codec == "h265":
            options["x265-params"] = "log-level=error"
        return CodecSetup("libx264" if target.codec == "h264" else "libx265", "yuv420p", options, False)
    if crf is not None:
        raise ConfigError(f"--crf applies to .mp4 (H.264/H.265) only, not {target.codec}")
    if target.codec == "prores":
        return CodecSetup("prores_ks", "yuv422p10le", {"profile": "hq", "vendor": "apl0"}, False, True)
    if target.codec == "prores4444":
        return CodecSetup("prores_ks", "yuv444p10le", {"profile": "4444", "vendor": "apl0"}, False, True)
    return CodecSetup("ffv1", "rgb48le" if target.bit_depth == 16 else "bgr0", {"level": "3"}, True)


@dataclass(frozen=True)
class VideoTiming:
    """The output stream's time base (frames carry pts in it) and average rate (a hint for encoders)."""

    time_base: Fraction
    average_rate: Fraction | None = None

    @staticmethod
    def from_fps(fps: float | Fraction) -> VideoTiming:
        """For text-to-video: frame i at pts i in a 1/fps time base."""
        rate = Fraction(fps).limit_denominator(1001000)
        if rate <= 0:
            raise ConfigError(f"--fps {fps} must be positive")
        return VideoTiming(1 / rate, rate)

    @staticmethod
    def of(info: VideoInfo) -> VideoTiming:
        return VideoTiming(info.time_base, info.average_rate)


@dataclass(frozen=True)
class StreamTags:
    rotation: int = 0
    colour: ColourInfo = BT709_LIMITED

    @staticmethod
    def of(info: VideoInfo) -> StreamTags:
        return StreamTags(info.rotation, info.colour)


def frames_at_fps(frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, int]]:
    """Number frames 0, 1, 2, ... for a VideoTiming.from_fps time base."""
    for pts, pixels in enumerate(frames):
        yield pixels, pts


def tagged_colour(tags: StreamTags, setup: CodecSetup) -> ColourInfo:
    if setup.rgb:
        return ColourInfo(RANGE_FULL, MATRIX_RGB, tags.colour.primaries, tags.colour.transfer)
    if setup.limited_only:
        return replace(tags.colour, range=RANGE_LIMITED)
    return tags.colour


def to_video_frame(pixels: np.ndarray, setup: CodecSetup, colour: ColourInfo) -> av.VideoFrame:
    """RGB pixels as a frame in the encoder's format, converted with the matrix and range it is tagged."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype not in (np.uint8, np.uint16):
        raise ConfigError(f"video frames must be (H, W, 3) uint8/uint16, not {pixels.shape} {pixels.dtype}")
    rgb = av.VideoFrame.from_ndarray(
        np.ascontiguousarray(pixels), format="rgb24" if pixels.dtype == np.uint8 else "rgb48le"
    )
    frame = rgb.reformat(
        format=setup.pixel_format,
        dst_colorspace=None if colour.matrix in (MATRIX_RGB, UNSPECIFIED) else colour.matrix,
        dst_color_range=colour.range or None,
    )
    frame.color_range, frame.colorspace = colour.range, colour.matrix
    frame.color_primaries, frame.color_trc = colour.primaries, colour.transfer
    return frame


def check_frame_size(pixels: np.ndarray, setup: CodecSetup, path: str) -> None:
    height, width = pixels.shape[:2]
    even_height = setup.pixel_format.startswith("yuv420")
    if (not setup.rgb and width % 2) or (even_height and height % 2):
        raise ConfigError(
            f"output {path!r}: {width}x{height} frames cannot be coded as {setup.pixel_format}; "
            "width (and for .mp4 height) must be even"
        )


def encode_container(
    temporary: str,
    target: VideoTarget,
    frames: Iterable[tuple[np.ndarray, int]],
    timing: VideoTiming,
    tags: StreamTags,
    audio_from: VideoInfo | None,
    recipe: dict | None,
    crf: int | None,
    threads: int,
) -> None:
    setup = codec_setup(target, crf)
    colour = tagged_colour(tags, setup)
    options = {}
    if target.extension in (".mp4", ".mov") and timing.time_base.numerator == 1:
        # Keep the caller's time base: the MOV muxer would otherwise choose its own timescale.
        options["video_track_timescale"] = str(timing.time_base.denominator)
    output = av.open(temporary, "w", format=MUXERS[target.extension], options=options)
    remuxer = None
    try:
        if recipe is not None:
            output.metadata["comment"] = json.dumps(recipe, sort_keys=True)
        stream = None
        for pixels, pts in frames:
            if stream is None:
                check_frame_size(pixels, setup, target.path)
                stream = output.add_stream(setup.encoder, rate=timing.average_rate, options=setup.options)
                stream.height, stream.width = pixels.shape[:2]
                stream.pix_fmt = setup.pixel_format
                stream.time_base = stream.codec_context.time_base = timing.time_base
                stream.codec_context.thread_count = threads
                context = stream.codec_context
                context.color_range, context.colorspace = colour.range, colour.matrix
                context.color_primaries, context.color_trc = colour.primaries, colour.transfer
                if tags.rotation:
                    stream.set_display_rotation(tags.rotation)
                # Audio streams come after the video one; their packets interleave as video is written.
                remuxer = AudioRemuxer(audio_from, output) if audio_from is not None else None
            elif pixels.shape[:2] != (stream.height, stream.width):
                raise ConfigError(f"output {target.path!r}: frame size changes to {pixels.shape[:2]}")
            frame = to_video_frame(pixels, setup, colour)
            frame.pts, frame.time_base = pts, timing.time_base
            output.mux(stream.encode(frame))
            if remuxer is not None:
                remuxer.mux_until(pts * timing.time_base)
        if stream is None:
            raise ConfigError(f"output {target.path!r}: no frames to write")
        output.mux(stream.encode(None))
        if remuxer is not None:
            remuxer.mux_until(None)
        output.close()
    finally:
        if remuxer is not None:
            remuxer.close()
        output.close()


def write_video(
    target: VideoTarget,
    frames: Iterable[tuple[np.ndarray, int]],
    timing: VideoTiming,
    tags: StreamTags = StreamTags(),
    audio_from: VideoInfo | None = None,
    recipe: dict | None = None,
    overwrite: bool = False,
    crf: int | None = None,
    threads: int = 0,
    frame_count: int | None = None,
) -> None:
    """Encode `frames`, (pixels, pts) pairs consumed one at a time, to a checked `target`.

    pts are in `timing.time_base` and kept as given (variable frame rate safe). `audio_from`'s audio
    streams are remuxed unchanged; a frame pattern carries no audio and needs `frame_count` up front.
    The recipe goes in the container's `comment` tag and in `<output>.json`. `threads` 0: FFmpeg's choice.
    """
    check_video_output(target.path, target.codec, target.bit_depth, overwrite, frame_count)
    if target.is_pattern:
        if frame_count is None:
            raise ConfigError(f"frame pattern {target.path!r}: the frame count must be known up front")
        write_frame_pattern(target, frames, frame_count, overwrite)
    else:
        if audio_from is not None:
            check_audio_fits(audio_from, target.path)
        container_frames = ((at_bit_depth(p, 16) if target.bit_depth == 16 else p, t) for p, t in frames)
        atomic_write(
            target.path,
            lambda temporary: encode_container(
                temporary, target, container_frames, timing, tags, audio_from, recipe, crf, threads
            ),
            overwrite,
        )
    if recipe is not None:
        write_sidecar(target.path, recipe)
