"""Writing a video render's clip: its frames cropped back to the asked size (the input's padding off),
with the input clip's frame timing, tags and audio, or a text-to-video clip's rate."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from freescale.config.render_config import RenderConfig
from freescale.config.video_outputs import check_video_output
from freescale.inputs.video_reader import read_video_info
from freescale.outputs.video.video_writer import StreamTags, VideoTiming, write_video
from freescale.progress import Progress
from freescale.tiling.stages import Size, input_part


def fitted_frame(pixels: np.ndarray, part: Size, size: Size) -> np.ndarray:
    """The top-left `part` (h, w) of a last-stage frame, resized bicubically to `size` when they differ
    (only when --size is not a whole multiple of the input)."""
    pixels = pixels[: part[0], : part[1]]
    if tuple(part) == tuple(size):
        return np.ascontiguousarray(pixels)
    full = 65535.0 if pixels.dtype == np.uint16 else 255.0
    tensor = torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1)[None]
    resized = F.interpolate(tensor, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    out = resized[0].permute(1, 2, 0).round().clamp(0, full).numpy()
    return out.astype(pixels.dtype)


def crossfaded(earlier: np.ndarray, later: np.ndarray, weight: float) -> np.ndarray:
    """A frame two chunks of a clip share: `weight` of the later chunk's, the rest the earlier's."""
    full = 65535.0 if later.dtype == np.uint16 else 255.0
    mixed = earlier.astype(np.float64) * (1 - weight) + later.astype(np.float64) * weight
    return np.clip(np.round(mixed), 0, full).astype(later.dtype)


def write_clip(config: RenderConfig, frames: Iterable[np.ndarray], recipe: dict, progress: Progress) -> None:
    """Encode the last stage's `frames`, one at a time as they are decoded, to the config's output."""
    info = read_video_info(config.input) if config.input is not None else None
    last = tuple(config.stages[-1])
    part = last if info is None else input_part((info.height, info.width), config.stages[0], last)
    target = check_video_output(config.output, config.codec, config.bit_depth, config.overwrite)
    timing = VideoTiming.of(info) if info is not None else VideoTiming.from_fps(config.fps)
    tags = StreamTags.of(info) if info is not None else StreamTags()
    pts = info.pts if info is not None else range(config.frames)

    def numbered() -> Iterator[tuple[np.ndarray, int]]:
        for index, pixels in enumerate(frames):
            yield fitted_frame(pixels, part, config.frame_size), pts[index]
            progress.frame(index + 1, config.frames)

    write_video(
        target, numbered(), timing, tags, audio_from=info, recipe=recipe, overwrite=config.overwrite,
        crf=config.crf, frame_count=config.frames,
    )  # fmt: skip
