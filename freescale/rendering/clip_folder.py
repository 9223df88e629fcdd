"""`freescale batch --input-dir`: a folder of video clips as batch jobs, one video-to-video job a clip, the
command's preset and flags giving every job's settings."""

from __future__ import annotations

import os
from typing import Any

from freescale.config.options import RENDER, all_options, command_sections
from freescale.config.presets import load_preset
from freescale.config.video_outputs import CONTAINER_BIT_DEPTHS, CONTAINER_CODECS, check_video_output
from freescale.errors import ConfigError
from freescale.models.families import BUILTIN_MODELS

# What counts as a clip in the folder (the name's ending, any case).
CLIP_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
# The render settings `freescale batch --input-dir` takes as flags, every clip's over the preset's: those of
# `freescale video` a preset may give, but for what each clip has of its own (its input, frames, output).
_PER_CLIP = {"input", "frames", "fps", "output", "image", "mask", "save_stages", "dpi", "pyramid"}
FOLDER_KEYS = tuple(
    o.name
    for o in all_options(command_sections("video"))
    if o.role == RENDER and o.preset and o.name not in _PER_CLIP
)


def find_clips(input_dir: str) -> list[str]:
    """The clips of `input_dir` by name: not its subfolders' and not hidden files."""
    if not os.path.isdir(input_dir):
        raise ConfigError(f"--input-dir {input_dir}: no such directory")
    names = sorted(
        name
        for name in os.listdir(input_dir)
        if not name.startswith(".")
        and name.lower().endswith(CLIP_EXTENSIONS)
        and os.path.isfile(os.path.join(input_dir, name))
    )
    if not names:
        raise ConfigError(f"--input-dir {input_dir} has no clips ({', '.join(CLIP_EXTENSIONS)})")
    return [os.path.join(os.path.abspath(input_dir), name) for name in names]


def output_extension(codec: str | None, bit_depth: int | None) -> str:
    """The container the outputs go in: the first (of .mp4, .mov, .mkv: the video writer's table) whose
    codecs include `codec` and which takes `bit_depth`; by default .mp4 (H.264), 16 bits .mov (ProRes)."""
    depth = bit_depth or 8
    for extension, codecs in CONTAINER_CODECS.items():
        if (codec is None or codec in codecs) and depth in CONTAINER_BIT_DEPTHS[extension]:
            return extension
    # No container takes both: the codec's own, whose check names the bit depths it allows.
    return next((ext for ext, codecs in CONTAINER_CODECS.items() if codec in codecs), ".mp4")


def _motion_adapter(values: dict[str, Any]) -> None:
    """Every job is a video's: the built-in adapter for a built-in model, as `freescale video` does."""
    from freescale.models.motion_adapter import TINY_MOTION_ADAPTER  # imports torch: not at CLI start

    if values.get("motion_adapter") is not None:
        return
    if values.get("model", "tiny") not in BUILTIN_MODELS:
        raise ConfigError("--motion-adapter is needed: a MotionAdapter directory or .safetensors file")
    values["motion_adapter"] = TINY_MOTION_ADAPTER


def folder_jobs(
    input_dir: str, output_dir: str | None, preset: str | None, flags: dict[str, Any]
) -> list[dict[str, Any]]:
    """One job a clip of `input_dir`: `input` the clip, `output` OUTPUT_DIR/<stem><container>, the rest
    the preset's settings with `flags` over them. A bad folder or setting shared by all is an error here;
    what is wrong with one clip is left to that job."""
    if not output_dir:
        raise ConfigError("--input-dir needs --output-dir: where the upscaled clips go")
    clips = find_clips(input_dir)
    if not os.path.isdir(output_dir):
        raise ConfigError(f"--output-dir {output_dir}: no such directory")
    if os.path.samefile(input_dir, output_dir):
        raise ConfigError(f"--output-dir {output_dir} is --input-dir; give the outputs a folder of their own")
    values = {**(load_preset(preset) if preset else {}), **flags}
    _motion_adapter(values)
    extension = output_extension(values.get("codec"), values.get("bit_depth"))
    probe = os.path.join(output_dir, "clip" + extension)
    check_video_output(probe, values.get("codec"), values.get("bit_depth") or 8, overwrite=True)
    root = os.path.abspath(output_dir)
    return [
        {**values, "input": clip, "output": os.path.join(root, os.path.splitext(os.path.basename(clip))[0])
         + extension}
        for clip in clips
    ]  # fmt: skip
