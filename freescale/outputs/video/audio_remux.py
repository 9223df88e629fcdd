"""Carrying the input's audio streams into the output unchanged (their packets remuxed, never
re-encoded), and checking up front, by a trial mux in memory, that each codec fits the container."""

from __future__ import annotations

import io
import os
from fractions import Fraction

import av

from freescale.errors import ConfigError
from freescale.inputs.video_info import VideoInfo

# The FFmpeg muxer behind each container extension; the order is the one alternatives are offered in.
MUXERS = {".mkv": "matroska", ".mov": "mov", ".mp4": "mp4"}


def fits(source: str, stream_index: int, muxer: str) -> bool:
    """Whether FFmpeg's `muxer` takes the audio stream's packets: a header and its first packet written
    to memory (some muxers refuse a codec only there, e.g. MP4 refuses PCM at the first packet)."""
    previous = av.logging.get_level()
    av.logging.set_level(None)  # a refusal is an answer here, not something to print
    source_container = av.open(source, "r")
    trial = av.open(io.BytesIO(), "w", format=muxer)
    try:
        stream = source_container.streams[stream_index]
        copy = trial.add_stream_from_template(stream)
        for packet in source_container.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = copy
            trial.mux(packet)
            break
        trial.close()
        return True
    except av.FFmpegError:
        return False
    finally:
        try:
            trial.close()
        except av.FFmpegError:
            pass
        source_container.close()
        av.logging.set_level(previous)


def check_audio_fits(info: VideoInfo, output_path: str) -> None:
    """Refuse (one-line ConfigError) an input audio stream that cannot be carried into `output_path`'s
    container, naming the containers that would take it. Frame patterns carry no audio: nothing to check."""
    extension = os.path.splitext(output_path)[1].lower()
    if extension not in MUXERS:
        return
    for audio in info.audio:
        if fits(info.path, audio.index, MUXERS[extension]):
            continue
        others = [
            ext for ext, muxer in MUXERS.items() if ext != extension and fits(info.path, audio.index, muxer)
        ]
        instead = f"use {' or '.join(others)}" if others else "no container here takes it"
        raise ConfigError(
            f"the input's {audio.codec} audio (stream {audio.index}) cannot be carried into {extension}: "
            f"{instead}"
        )


class AudioRemuxer:
    """Copies the audio packets of `info` into `output`, interleaved with the video as it is written."""

    def __init__(self, info: VideoInfo, output: av.container.OutputContainer):
        self.source = av.open(info.path, "r")
        inputs = [self.source.streams[audio.index] for audio in info.audio]
        self.copies = {stream.index: output.add_stream_from_template(stream) for stream in inputs}
        self.output = output
        self.packets = self.source.demux(inputs) if inputs else iter(())
        self.pending: av.Packet | None = None

    def mux_until(self, seconds: Fraction | None) -> None:
        """Mux every audio packet that starts before `seconds` (all of them for None)."""
        while True:
            packet = self.pending or next(self.packets, None)
            self.pending = None
            if packet is None:
                return
            if packet.dts is None:  # the demuxer's flush packet
                continue
            start = packet.pts if packet.pts is not None else packet.dts
            if seconds is not None and start * packet.time_base > seconds:
                self.pending = packet
                return
            packet.stream = self.copies[packet.stream.index]
            self.output.mux(packet)

    def close(self) -> None:
        self.source.close()
