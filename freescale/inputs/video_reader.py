"""Reading any video FFmpeg decodes: its metadata cheaply (demuxing, no decoding but one frame for the
rotation), then its frames one at a time as RGB arrays, 8-bit sources as uint8, deeper ones as uint16."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import NamedTuple

import av
import numpy as np

from freescale.errors import ConfigError
from freescale.inputs.video_info import AudioStreamInfo, ColourInfo, VideoInfo


class DecodedFrame(NamedTuple):
    pixels: np.ndarray  # (H, W, 3) uint8 or uint16 RGB, not rotated (the rotation is metadata)
    pts: int


def open_input(path: str) -> av.container.InputContainer:
    """Open a media file, a one-line ConfigError when FFmpeg cannot read it."""
    if not os.path.isfile(path):
        raise ConfigError(f"input video {path!r} does not exist")
    try:
        return av.open(path, "r")
    except av.FFmpegError as error:
        raise ConfigError(f"input {path!r} is not a video FFmpeg can read ({error.strerror})") from None


def video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first real video stream: cover art (an attached picture) is not one."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise ConfigError(f"input {path!r} has no video stream")


def bit_depth_of(pixel_format: av.VideoFormat | None) -> int:
    return max((component.bits for component in pixel_format.components), default=8) if pixel_format else 8


def presentation_pts(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> list:
    """Every frame's pts from the packets alone (no decoding), sorted into presentation order."""
    pts = []
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's end-of-stream marker, not a frame
            continue
        stamp = packet.pts if packet.pts is not None else packet.dts
        pts.append(stamp if stamp is not None else len(pts))
    return sorted(pts)


def first_frame_rotation(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The display rotation in degrees (0, 90, 180 or 270 for the usual ones), from the first frame's
    display matrix (PyAV exposes the stream's
    one only through the decoded frames)."""
    for frame in container.decode(stream):
        return round(frame.rotation) % 360
    return 0


def read_video_info(path: str) -> VideoInfo:
    """Probe `path`; refuse (ConfigError) what is not a video, has no video stream or no frame."""
    container = open_input(path)
    try:
        stream = video_stream(container, path)
        context = stream.codec_context
        pts = presentation_pts(container, stream)
        if not pts:
            raise ConfigError(f"input {path!r} has a video stream with zero frames")
        container.close()
        container = open_input(path)
        stream = video_stream(container, path)
        rotation = first_frame_rotation(container, stream)
        audio = tuple(
            AudioStreamInfo(s.index, a.name, a.sample_rate, a.channels)
            for s, a in ((s, s.codec_context) for s in container.streams.audio)
        )
        return VideoInfo(
            path=path,
            width=context.width,
            height=context.height,
            frame_count=len(pts),
            time_base=stream.time_base,
            average_rate=stream.average_rate,
            pts=tuple(pts),
            rotation=rotation,
            colour=ColourInfo(
                context.color_range, context.colorspace, context.color_primaries, context.color_trc
            ),
            bit_depth=bit_depth_of(context.format),
            pixel_format=context.format.name if context.format else "",
            codec=context.name,
            audio=audio,
        )
    except av.FFmpegError as error:
        raise ConfigError(f"input {path!r} could not be read as a video ({error.strerror})") from None
    finally:
        container.close()


def iter_frames(info: VideoInfo) -> Iterator[DecodedFrame]:
    """Decode the video of `info` one frame at a time, in presentation order, as RGB with its pts.

    The YUV-to-RGB conversion uses the stream's own matrix and range, so colour tags and pixels agree.
    """
    rgb_format = "rgb24" if info.bit_depth <= 8 else "rgb48le"
    container = open_input(info.path)
    try:
        stream = video_stream(container, info.path)
        for index, frame in enumerate(container.decode(stream)):
            rgb = frame.reformat(
                format=rgb_format,
                src_colorspace=frame.colorspace or None,
                src_color_range=frame.color_range or None,
            )
            pts = frame.pts if frame.pts is not None else info.pts[min(index, len(info.pts) - 1)]
            yield DecodedFrame(rgb.to_ndarray(), pts)
    finally:
        container.close()


def read_recipe(path: str) -> dict | None:
    """The recipe a render put in the container's `comment` tag (Matroska reads it back as COMMENT)."""
    container = open_input(path)
    try:
        tags = {key.lower(): value for key, value in container.metadata.items()}
    finally:
        container.close()
    try:
        return json.loads(tags["comment"]) if "comment" in tags else None
    except json.JSONDecodeError:
        return None
