"""Clips with known content and motion, made offline (`freescale make-test-clip`): a horizontal pan
across a smooth pattern, with an optional tone, for trying video-to-video and for tests."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from freescale.atomic_files import atomic_write
from freescale.errors import ConfigError

PAN_PIXELS_PER_FRAME = 2  # the known motion: the pattern moves this far left each frame
_SAMPLE_RATE = 48000
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


def pan_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame `index` of the pan: a pattern of soft stripes and a gradient, shifted left by the pan."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x = x + PAN_PIXELS_PER_FRAME * index
    red = 128 + 100 * np.sin(x / 9.0)
    green = 255 * y / max(height - 1, 1)
    blue = 128 + 100 * np.sin((x + y) / 13.0)
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).round().astype(np.uint8)


def _tone(chunk_start: int, samples: int) -> np.ndarray:
    t = (np.arange(samples) + chunk_start) / _SAMPLE_RATE
    wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave, wave])  # planar stereo


def write_pan_clip(path: str, width: int, height: int, frames: int, fps: float, audio: bool) -> None:
    """An H.264 (.mp4/.mov/.mkv) clip of the pan, with AAC audio as long as the video when `audio`."""
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ConfigError(f"--size {width}x{height}: each side must be even and at least 16")
    if frames < 1:
        raise ConfigError(f"--frames {frames} must be at least 1")
    muxer = _MUXERS.get(os.path.splitext(path)[1].lower())
    if muxer is None:
        raise ConfigError(f"make-test-clip {path!r}: use a .mp4, .mov or .mkv name")
    rate = Fraction(fps).limit_denominator(1001000)
    if rate <= 0:
        raise ConfigError(f"--fps {fps} must be positive")

    def write(temporary: str) -> None:
        container = av.open(temporary, "w", format=muxer)
        video = container.add_stream("libx264", rate=rate, options={"crf": "12"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=_SAMPLE_RATE, layout="stereo") if audio else None
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(pan_frame(index, width, height), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(video.encode(frame.reformat(format="yuv420p")))
        container.mux(video.encode(None))
        if sound is not None:
            total = int(_SAMPLE_RATE * frames / rate)
            for start in range(0, total, 1024):
                chunk = av.AudioFrame.from_ndarray(_tone(start, 1024), format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = _SAMPLE_RATE, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
        container.close()

    atomic_write(path, write, overwrite=False)
