"""An image render's stages and exact output size from --size, --print (at --dpi), --aspect or --scale:
any size, checked before any model loads (the geometry is freescale.tiling's)."""

from __future__ import annotations

from typing import Any

from freescale.config.options import FIT_MODES, STAGE_RULES
from freescale.config.parsing import parse_number, parse_size, parse_stages, target_size
from freescale.errors import ConfigError
from freescale.tiling.buckets import aspect_range, within_trained_aspects
from freescale.tiling.fitted_stages import aspect_box, aspect_stages, fitted_stages, is_native_multiple
from freescale.tiling.print_sizes import DEFAULT_PRINT_DPI, parse_aspect, print_pixels
from freescale.tiling.stages import Size

# The largest stage or output side: beyond it plans, tile grids and the output writers are untested.
MAX_SIDE = 65536
# The settings only an image render takes (`freescale video` refuses them).
IMAGE_SIZE_KEYS = ("print_size", "landscape", "aspect", "image_size")
_FLAGS = {"print_size": "--print", "landscape": "--landscape", "aspect": "--aspect"}


def _wxh(size: Size) -> str:
    return f"{size[1]}x{size[0]}"


def refuse_image_size_keys(values: dict[str, Any]) -> None:
    """A video render given --print, --landscape, --aspect or an image size: one line, before any work."""
    for key in IMAGE_SIZE_KEYS:
        value = values.pop(key, None)
        if value not in (None, False):
            flag = _FLAGS.get(key, key)
            raise ConfigError(f"{flag} applies to images (`freescale render`), not to `freescale video`")


def _given_image_size(value: Any) -> Size | None:
    """A recipe's image_size, [height, width]; a preset may also write it as WIDTHxHEIGHT text."""
    if value is None:
        return None
    if isinstance(value, list | tuple) and len(value) == 2:
        return (parse_number(value[0], "image_size", int), parse_number(value[1], "image_size", int))
    return parse_size(value, "image_size")


def _check_aspect(shape: Size, native: int, what: str) -> None:
    """A shape (h, w) beyond the tallest or widest trained size has no base stage to grow from."""
    if not within_trained_aspects(shape, native):
        tallest, widest = aspect_range(native)
        raise ConfigError(
            f"{what} is beyond the model's trained shapes, {_wxh(tallest)} (tallest) to {_wxh(widest)} "
            "(widest); choose a size between those aspects"
        )


def exact_target(values: dict[str, Any], size: Any, print_size: Any, landscape: bool) -> Size | None:
    """The exact output size asked by --print (setting --dpi, 300 by default) or --size, else None."""
    if print_size is not None:
        dpi = values.get("dpi")
        dpi = DEFAULT_PRINT_DPI if dpi is None else parse_number(dpi, "--dpi", int)
        values["dpi"] = dpi  # the file's resolution tag says the size it prints at
        return print_pixels(str(print_size), dpi, landscape, MAX_SIDE)
    if size is None:
        return None
    target = parse_size(size)
    if min(target) < 1:
        raise ConfigError(f"--size {_wxh(target)} must be positive on each side")
    if max(target) > MAX_SIDE:
        raise ConfigError(f"--size {_wxh(target)} is more than the {MAX_SIDE} px a side the renderer takes")
    return target


def image_stages(values: dict[str, Any], native: int) -> tuple[Size, ...]:
    """Resolve an image render's size settings in `values` (popping those that are no RenderConfig field,
    setting `image_size` and, for --print, `dpi`) and return its stages.

    --stages as given; else --aspect with --scale (`aspect_stages`); else the target of --print, --size or
    --scale times the native size (`fitted_stages`: a whole multiple of the native size gets today's
    stages). `image_size` is the exact output size where it is not the last stage's (None otherwise):
    the target, the --aspect box in the last stage, or with --stages the one a recipe kept."""
    rule = values.pop("stage_rule", "double")
    if rule not in STAGE_RULES:
        raise ConfigError(f"--stage-rule {rule!r} is not one of {', '.join(STAGE_RULES)}")
    stages, size, scale = values.pop("stages", None), values.pop("size", None), values.pop("scale", None)
    print_size, aspect = values.pop("print_size", None), values.pop("aspect", None)
    landscape = bool(values.pop("landscape", False))
    given = _given_image_size(values.pop("image_size", None))
    named = (("--size", size), ("--print", print_size), ("--aspect", aspect))
    asked = [flag for flag, value in named if value is not None]
    if len(asked) > 1:
        raise ConfigError(f"give one of --size, --print and --aspect, not {asked[0]} and {asked[1]}")
    if landscape and print_size is None:
        raise ConfigError("--landscape applies to --print (a paper size turned on its side)")
    target = exact_target(values, size, print_size, landscape)
    ratio = parse_aspect(aspect) if aspect is not None else None
    if ratio is not None:
        _check_aspect(ratio, native, f"--aspect {aspect}")
    if stages is not None:
        resolved = parse_stages(stages)
        if not resolved:
            raise ConfigError("no stages: give --size or --stages")
        exact = target or (aspect_box(resolved[-1], ratio) if ratio is not None else given)
    elif ratio is not None:
        factor = parse_number(scale if scale is not None else 2, "--scale", int)
        if factor < 1:
            raise ConfigError(f"--scale {factor} must be a whole number >= 1")
        resolved = aspect_stages(ratio, native, factor, rule)
        exact = aspect_box(resolved[-1], ratio)
    else:
        exact = target if target is not None else target_size(None, scale, (native, native))
        if not is_native_multiple(exact, native):
            _check_aspect(exact, native, f"{'--print' if print_size is not None else '--size'} {_wxh(exact)}")
        resolved = fitted_stages(exact, native, rule)
    values["image_size"] = None if exact is None or tuple(exact) == tuple(resolved[-1]) else tuple(exact)
    return resolved


def check_image_size(image_size: Size | None, fit: str, last_stage: Size) -> None:
    """The exact output size fits in the last stage (it is cut or resized from it); --fit is known."""
    if fit not in FIT_MODES:
        raise ConfigError(f"--fit {fit!r} is not one of {', '.join(FIT_MODES)}")
    if image_size is None:
        return
    if min(image_size) < 1 or image_size[0] > last_stage[0] or image_size[1] > last_stage[1]:
        raise ConfigError(
            f"the output size {_wxh(image_size)} does not fit in the last stage {_wxh(last_stage)}; "
            "give a --size or --print that fits in it, or other --stages"
        )
