"""The video part of a render's settings: a text-to-video clip's frames and rate, or an input clip whose
size, frame count and timing decide the stages, checked before any model loads."""

from __future__ import annotations

from typing import Any

from freescale.config.options import (
    DEFAULT_FPS,
    DEFAULT_FRAMES,
    DEFAULT_WINDOW,
    STAGE_RULES,
    option,
    section_keys,
)
from freescale.config.parsing import parse_number, parse_stages, resolve_stages, target_size
from freescale.errors import ConfigError
from freescale.tiling.stages import Size, input_stages, round_up

# The settings only `freescale video` takes (an image render refuses them).
VIDEO_KEYS = section_keys("video")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def refuse_video_keys(values: dict[str, Any]) -> None:
    """An image render given a video setting (from a flag, a preset or a recipe); an image's own recipe or
    checkpoint holds the video settings' defaults, which are no video."""
    given = [k for k in VIDEO_KEYS if values.get(k) is not None and values[k] != option(k).default]
    if given:
        raise ConfigError(f"{_flag(given[0])} applies to `freescale video` only")


def restart_from_strength(values: dict[str, Any]) -> None:
    strength = values.pop("strength", None)
    if strength is None:
        return
    strength = parse_number(strength, "--strength", float)
    if not 0 < strength <= 1:
        raise ConfigError(f"--strength {strength} must be in (0, 1]: 1 restarts the upper stages from noise")
    if values.get("restart") is not None:
        raise ConfigError("give --strength or --restart, not both (--strength S is --restart 1-S)")
    values["restart"] = 1 - strength


def _input_stages(values: dict[str, Any], stages: Any, size: Any, scale: Any, rule: str) -> tuple[Size, ...]:
    """Stages of a video-to-video render; sets the frames, the output frame size and an empty prompt."""
    from freescale.inputs.video_reader import read_video_info

    path = values["input"]
    info = read_video_info(path)
    if values.get("fps") is not None:
        raise ConfigError("--fps does not apply with --input: the clip's frame timing is kept")
    frames = values.get("frames")
    if frames is not None and parse_number(frames, "--frames", int) != info.frame_count:
        raise ConfigError(
            f"--frames {frames}: the input {path!r} has {info.frame_count} frames (all of them are rendered)"
        )
    values["frames"] = info.frame_count
    values.setdefault("prompt", "")
    source = (info.height, info.width)
    target = target_size(size, scale, source)
    if target[0] < source[0] or target[1] < source[1]:
        raise ConfigError(
            f"--size {target[1]}x{target[0]} is smaller than the input's {info.width}x{info.height}; "
            "the video command upscales"
        )
    values["frame_size"] = target
    if stages is None:
        return input_stages(source, target, rule)
    resolved = parse_stages(stages)
    base = (round_up(source[0]), round_up(source[1]))
    if resolved[0] != base:
        raise ConfigError(
            f"--stages starts at {resolved[0][1]}x{resolved[0][0]}, but with --input the first stage is "
            f"the input padded to multiples of 64: {base[1]}x{base[0]}"
        )
    return resolved


def _window(values: dict[str, Any]) -> int:
    """--window, by default the adapter's training length; at most its positional table (read without
    loading it; a pickled adapter's is checked when it loads)."""
    from freescale.models.motion_adapter import adapter_window

    table = adapter_window(values["motion_adapter"])
    window = values.get("window")
    window = min(DEFAULT_WINDOW, table or DEFAULT_WINDOW) if window is None else window
    window = parse_number(window, "--window", int)
    if table is not None and window > table:
        raise ConfigError(
            f"--window {window} is more than the motion adapter's positional table of {table} frames"
        )
    return window


def video_stages(values: dict[str, Any], native: int) -> tuple[Size, ...]:
    """Resolve a video render's values in place (frames, fps, restart from --strength, the output frame
    size) and return its stages: from the input clip with --input, else as for an image."""
    restart_from_strength(values)
    stages, size, scale = values.pop("stages", None), values.pop("size", None), values.pop("scale", None)
    rule = values.pop("stage_rule", "double")
    if rule not in STAGE_RULES:
        raise ConfigError(f"--stage-rule {rule!r} is not one of {', '.join(STAGE_RULES)}")
    if values.get("input") is not None:
        resolved = _input_stages(values, stages, size, scale, rule)
    else:
        resolved = resolve_stages(native, stages, size, scale, rule)
        values.setdefault("frames", DEFAULT_FRAMES)
        values.setdefault("fps", DEFAULT_FPS)
        values["frame_size"] = resolved[-1]
    values["window"] = _window(values)
    return resolved
