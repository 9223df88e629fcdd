"""User text (CLI flags and YAML values) to typed values: sizes, stage lists, FreeU parameters, numbers."""

from __future__ import annotations

from typing import Any

from freescale.config.options import FREEU_DEFAULT, STAGE_RULES
from freescale.errors import ConfigError
from freescale.tiling.stages import Size, stages_for_target

FreeU = tuple[float, float, float, float]


def parse_size(text: Any, what: str = "--size") -> Size:
    """WIDTHxHEIGHT as image tools print it ('4096x2048'), or one number for a square; returns (h, w)."""
    if isinstance(text, int):
        return (text, text)
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        return (numbers[0], numbers[0])
    if len(numbers) == 2:
        width, height = numbers
        return (height, width)
    raise ConfigError(f"{what} {text!r} is not a size; use WIDTHxHEIGHT such as 4096x2048, or one number")


def parse_stages(text: Any) -> tuple[Size, ...]:
    items = text if isinstance(text, list | tuple) else str(text).split(",")
    return tuple(parse_size(item, "--stages item") for item in items if str(item).strip())


def parse_freeu(value: Any, default: FreeU = FREEU_DEFAULT) -> FreeU | None:
    """Four numbers, off (None), or on (`True`: `default`, the model family's published values)."""
    if value in (None, False, "off", "none"):
        return None
    if value is True:
        return default
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        numbers = tuple(float(v) for v in items)
    except ValueError:
        numbers = ()
    if len(numbers) != 4:
        raise ConfigError(f"freeu {value!r} must be four numbers b1,b2,s1,s2 (or off)")
    return numbers


def target_size(size: Any, scale: Any, unit: Size) -> Size:
    """The final size (h, w): --size, else --scale (default 2) times `unit` (the native size, or an input
    clip's size)."""
    if size is not None:
        return parse_size(size)
    factor = parse_number(scale if scale is not None else 2, "--scale", int)
    if factor < 1:
        raise ConfigError(f"--scale {factor} must be a whole number >= 1")
    return (unit[0] * factor, unit[1] * factor)


def resolve_stages(
    native: int, stages: Any = None, size: Any = None, scale: Any = None, stage_rule: str = "double"
) -> tuple[Size, ...]:
    """Stages from an explicit list, else from a target (--size, or --scale times the native size)."""
    if stage_rule not in STAGE_RULES:
        raise ConfigError(f"--stage-rule {stage_rule!r} is not one of {', '.join(STAGE_RULES)}")
    if stages is not None:
        return parse_stages(stages)
    target = target_size(size, scale, (native, native))
    if target[0] % native or target[1] % native or min(target) <= 0:
        raise ConfigError(
            f"--size {target[1]}x{target[0]} must be a whole multiple of the model's native {native} px "
            "on each side (or give --stages explicitly)"
        )
    return stages_for_target(target, native, stage_rule)


def parse_number(value: Any, what: str, kind: type):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {value!r} is not a {kind.__name__}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise ConfigError(f"{what} {value!r} is not a whole number")
    return number
