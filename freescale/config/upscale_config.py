"""`freescale upscale`'s settings: the exact output size (--scale times the input, --size or --print), the
stages planned from the input (freescale.tiling.upscale_stages), --strength, and the checks of the input,
the output format and the caption model, all before any model loads."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from freescale.config.image_size import MAX_SIDE, exact_target
from freescale.config.options import FIT_MODES, STAGE_RULES
from freescale.config.parsing import parse_number, parse_size, parse_stages
from freescale.config.user_image import FLAG, user_image_facts
from freescale.config.video_config import refuse_video_keys, restart_from_strength
from freescale.errors import ConfigError
from freescale.tiling.buckets import aspect_range, within_trained_aspects
from freescale.tiling.stages import Size
from freescale.tiling.upscale_stages import scaled_size, upscale_stages

if TYPE_CHECKING:
    from freescale.config.render_config import RenderConfig

_SIZE_FLAGS = (("scale", "--scale"), ("size", "--size"), ("print_size", "--print"))
# What `freescale upscale` has no use for: the input decides the base stage and the aspect.
_NOT_FOR_UPSCALE = (
    ("image", "--image", "IMAGE is the input"),
    ("aspect", "--aspect", "the input's aspect is kept"),
)


def _wxh(size: Size) -> str:
    return f"{size[1]}x{size[0]}"


def parse_scale(value: Any) -> Fraction:
    """--scale N: any positive number (2, 1.5, 3.25), exactly."""
    try:
        scale = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--scale {value!r} is not a number; the output is N times the input") from None
    if scale <= 0:
        raise ConfigError(f"--scale {value} must be more than 0: the output is N times the input's size")
    return scale


def _target(values: dict[str, Any], input_size: Size) -> Size | None:
    """The exact output size (h, w) of --scale, --size or --print (one of them), else None."""
    asked = {key: values.pop(key, None) for key, _ in _SIZE_FLAGS}
    landscape = bool(values.pop("landscape", False))
    flags = [flag for key, flag in _SIZE_FLAGS if asked[key] is not None]
    if len(flags) > 1:
        raise ConfigError(f"give one of --scale, --size and --print, not {flags[0]} and {flags[1]}")
    if landscape and asked["print_size"] is None:
        raise ConfigError("--landscape applies to --print (a paper size turned on its side)")
    if asked["scale"] is not None:
        target = scaled_size(input_size, parse_scale(asked["scale"]))
        if max(target) > MAX_SIDE:
            raise ConfigError(
                f"--scale {asked['scale']} of the {_wxh(input_size)} input is {_wxh(target)}, more than the "
                f"{MAX_SIDE} px a side the renderer takes"
            )
        return target
    return exact_target(values, asked["size"], asked["print_size"], landscape)


def _given_size(value: Any) -> Size | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and len(value) == 2:
        return (parse_number(value[0], "image_size", int), parse_number(value[1], "image_size", int))
    return parse_size(value, "image_size")


def upscale_image_stages(values: dict[str, Any], native: int) -> tuple[Size, ...]:
    """Resolve an upscale's values in place (restart from --strength, `image_size`, the bit depth of the
    input by default, an empty prompt by default) and return its stages (`upscale_stages`); a recipe's
    stages are kept when no size is given."""
    restart_from_strength(values)
    refuse_video_keys(values)
    for key, flag, why in _NOT_FOR_UPSCALE:
        if values.get(key) is not None:
            raise ConfigError(f"{flag} does not apply to `freescale upscale`: {why}")
    facts = user_image_facts(values["input_image"])
    rule, fit = values.pop("stage_rule", "double"), values.get("fit", "crop")
    if rule not in STAGE_RULES:
        raise ConfigError(f"--stage-rule {rule!r} is not one of {', '.join(STAGE_RULES)}")
    if fit not in FIT_MODES:
        raise ConfigError(f"--fit {fit!r} is not one of {', '.join(FIT_MODES)}")
    stages, given = values.pop("stages", None), _given_size(values.pop("image_size", None))
    target = _target(values, facts.size)
    if target is not None:
        if not within_trained_aspects(facts.size, native):
            tallest, widest = aspect_range(native)
            raise ConfigError(
                f"{FLAG} {values['input_image']} is {_wxh(facts.size)}, beyond the model's trained shapes "
                f"{_wxh(tallest)} (tallest) to {_wxh(widest)} (widest); crop it to an aspect between those"
            )
        resolved = upscale_stages(facts.size, target, native, rule, fit)
    elif stages is not None:  # a recipe's stages and exact size, replayed
        resolved = parse_stages(stages)
        target = given or resolved[-1]
    else:
        raise ConfigError("give the output's size: --scale N (times the input), --size WxH or --print SIZE")
    if len(resolved) == 1:
        raise ConfigError(
            f"the output {_wxh(target)} is no larger than the {_wxh(resolved[0])} base stage the input is "
            "fitted to: nothing to upscale; ask for a larger --scale, --size or --print"
        )
    values["image_size"] = None if tuple(target) == tuple(resolved[-1]) else tuple(target)
    values.setdefault("prompt", "")
    values.setdefault("bit_depth", facts.bit_depth)
    return resolved


def check_upscale(c: RenderConfig) -> None:
    """What an upscale's output must take of its input, and its caption model, checked up front."""
    from freescale.models.image_captions import check_caption_model

    facts = user_image_facts(c.input_image)
    ext = os.path.splitext(c.output)[1].lower()
    if c.image is not None:
        raise ConfigError("--image does not apply to `freescale upscale`: IMAGE is the input")
    if c.bit_depth == 16 and ext not in (".tif", ".tiff", ".png"):
        raise ConfigError(f"--bit-depth 16 needs a .png or .tif output, not {c.output!r}")
    if facts.alpha and ext not in (".tif", ".tiff", ".png"):
        raise ConfigError(
            f"{FLAG} {c.input_image} has alpha, which {c.output!r} cannot hold: write a .png or .tif"
        )
    if c.caption_model is not None:
        check_caption_model(c.caption_model)
