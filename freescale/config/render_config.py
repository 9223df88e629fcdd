"""`RenderConfig`: one frozen, validated description of a render, built from CLI flags and YAML presets.

Everything a user can get wrong is checked here, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from freescale.errors import ConfigError
from freescale.tiling.stages import Size, stages_for_target

FREEU_DEFAULT = (1.1, 1.2, 0.6, 0.4)  # (b1, b2, s1, s2) of the reference run script
DEFAULT_NEGATIVE_PROMPT = "blurry, ugly, duplicate, poorly drawn, deformed, mosaic"
OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
STAGE_RULES = ("double", "direct")
BLUR_MODES = ("3d", "2d")


@dataclass(frozen=True)
class RenderConfig:
    """A whole render: stages are resolved pixel sizes (height, width), base first."""

    prompt: str
    stages: tuple[Size, ...]
    native_size: int
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    model: str = "tiny"
    model_config: str | None = None
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    cosine_scale: float = 2.0
    cosine_scale_bg: float = 0.5
    dilate_tau: int = 35
    restart: float = 0.3
    fast_mode: bool = False
    freeu: tuple[float, float, float, float] | None = FREEU_DEFAULT
    blur: str = "3d"
    image: str | None = None
    mask: str | None = None
    output: str = "freescale.png"
    save_stages: bool = False
    overwrite: bool = False
    bit_depth: int = 8
    dpi: int | None = None
    pyramid: bool = False
    device: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def restart_step(self) -> int:
        return int(self.restart * self.steps)

    def replace(self, **changes: Any) -> RenderConfig:
        return dataclasses.replace(self, **changes)


def format_size(size: Size) -> str:
    """(h, w) -> 'WxH', the way users write sizes."""
    return f"{size[1]}x{size[0]}"


def _validate(c: RenderConfig) -> None:
    if not c.prompt.strip():
        raise ConfigError("the prompt is empty; give the text to render")
    if c.native_size < 64 or c.native_size % 8:
        raise ConfigError(f"native size {c.native_size} is not a positive multiple of 8")
    _validate_stages(c.stages, c.native_size)
    if c.steps < 1:
        raise ConfigError(f"--steps {c.steps} must be at least 1")
    if c.guidance < 0:
        raise ConfigError(f"--guidance {c.guidance} must be >= 0")
    if not 0.0 <= c.restart < 1.0:
        raise ConfigError(f"--restart {c.restart} must be in [0, 1): the fraction of steps to skip")
    if c.dilate_tau < 0:
        raise ConfigError(f"--dilate-tau {c.dilate_tau} must be >= 0 (a step index)")
    for name in ("cosine_scale", "cosine_scale_bg"):
        if getattr(c, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(c, name)} must be >= 0")
    if c.freeu is not None and len(c.freeu) != 4:
        raise ConfigError(f"freeu {c.freeu} must be four numbers b1, b2, s1, s2")
    if c.blur not in BLUR_MODES:
        raise ConfigError(f"--blur {c.blur!r} is not one of {', '.join(BLUR_MODES)}")
    if c.dtype is not None and c.dtype not in ("fp32", "fp16", "bf16"):
        raise ConfigError(f"--dtype {c.dtype!r} is not one of fp32, fp16, bf16")
    for flag, path in (("--image", c.image), ("--mask", c.mask)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{flag} {path}: no such file")
    if c.image is not None:
        _check_base_image(c.image, c.stages[0])
    if c.mask is not None:
        _open_image_header(c.mask, "--mask")
    check_output_path(c.output)
    is_tiff = os.path.splitext(c.output)[1].lower() in (".tif", ".tiff")
    if c.bit_depth not in (8, 16):
        raise ConfigError(f"--bit-depth {c.bit_depth} is not 8 or 16")
    if c.bit_depth == 16 and not is_tiff:
        raise ConfigError(f"--bit-depth 16 needs a .tif/.tiff output, not {c.output!r}")
    if c.pyramid and not is_tiff:
        raise ConfigError(f"--pyramid needs a .tif/.tiff output, not {c.output!r}")
    if c.dpi is not None and not 1 <= c.dpi <= 100000:
        raise ConfigError(f"--dpi {c.dpi} must be between 1 and 100000")


def _validate_stages(stages: tuple[Size, ...], native: int) -> None:
    if not stages:
        raise ConfigError("no stages: give --size or --stages")
    for h, w in stages:
        if h <= 0 or w <= 0 or h % 64 or w % 64:
            raise ConfigError(f"stage size {format_size((h, w))} is not a multiple of 64 on each side")
    for previous, stage in zip(stages, stages[1:], strict=False):
        larger = stage[0] >= previous[0] and stage[1] >= previous[1] and stage != previous
        if not larger:
            raise ConfigError(
                f"stage {format_size(stage)} is not larger than the previous stage {format_size(previous)}"
            )
    for h, w in stages[1:]:
        if h < native or w < native:
            raise ConfigError(
                f"stage {format_size((h, w))} is smaller than the model's native {native} px on a side; "
                "every stage after the base needs at least the native size"
            )


def _open_image_header(path: str, flag: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"{flag} {path} is not a readable image ({exc})") from None


def _check_base_image(path: str, base: Size) -> None:
    width, height = _open_image_header(path, "--image")
    if (height, width) != tuple(base):
        raise ConfigError(
            f"--image {path} is {width}x{height} but the first stage is {format_size(base)}; "
            "resize it or set --stages so the first stage matches"
        )


def check_output_path(path: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_EXTENSIONS:
        raise ConfigError(f"output {path!r} has extension {ext!r}; allowed: {', '.join(OUTPUT_EXTENSIONS)}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"output {path!r}: directory {directory} does not exist")


def check_outputs_free(config: RenderConfig, stage_paths: list[str]) -> None:
    """Refuse, before any work, to replace files the user already has (unless --overwrite): the images
    and their recipe sidecars (out.png -> out.png.json)."""
    if config.overwrite:
        return
    for image in [config.output, *stage_paths]:
        for path in (image, image + ".json"):
            if os.path.exists(path):
                raise ConfigError(f"output {path!r} already exists; pass --overwrite to replace it")


def load_recipe(path: str) -> dict[str, Any]:
    """The render options of a recipe (an output's sidecar .json) as preset-style values."""
    import json

    try:
        with open(path, encoding="utf-8") as handle:
            recipe = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--from-recipe {path}: not a readable JSON recipe ({exc})") from None
    if not isinstance(recipe, dict) or "stages" not in recipe or "prompt" not in recipe:
        raise ConfigError(f"--from-recipe {path}: not a freescale recipe (no prompt and stages)")
    return recipe_values(recipe)


def recipe_values(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe's render options as preset-style values (stages as the text a user would write)."""
    values = {k: v for k, v in recipe.items() if k in PRESET_KEYS}
    values["stages"] = ",".join(f"{w}x{h}" for h, w in recipe["stages"])
    return values


# ---- parsing of user text (CLI flags and YAML values) ----


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


def parse_freeu(value: Any) -> tuple[float, float, float, float] | None:
    if value in (None, False, "off", "none"):
        return None
    if value is True:
        return FREEU_DEFAULT
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    try:
        numbers = tuple(float(v) for v in items)
    except ValueError:
        numbers = ()
    if len(numbers) != 4:
        raise ConfigError(f"freeu {value!r} must be four numbers b1,b2,s1,s2 (or off)")
    return numbers


def resolve_stages(
    native: int, stages: Any = None, size: Any = None, scale: Any = None, stage_rule: str = "double"
) -> tuple[Size, ...]:
    """Stages from an explicit list, else from a target (--size, or --scale times the native size)."""
    if stage_rule not in STAGE_RULES:
        raise ConfigError(f"--stage-rule {stage_rule!r} is not one of {', '.join(STAGE_RULES)}")
    if stages is not None:
        return parse_stages(stages)
    if size is not None:
        target = parse_size(size)
    else:
        factor = _number(scale if scale is not None else 2, "--scale", int)
        if factor < 1:
            raise ConfigError(f"--scale {factor} must be a whole number >= 1")
        target = (native * factor, native * factor)
    if target[0] % native or target[1] % native or min(target) <= 0:
        raise ConfigError(
            f"--size {target[1]}x{target[0]} must be a whole multiple of the model's native {native} px "
            "on each side (or give --stages explicitly)"
        )
    return stages_for_target(target, native, stage_rule)


def _number(value: Any, what: str, kind: type):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {value!r} is not a {kind.__name__}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise ConfigError(f"{what} {value!r} is not a whole number")
    return number


# Steps between mid-stage checkpoints (checkpoints.py; here so that the CLI's help needs no torch).
DEFAULT_CHECKPOINT_EVERY = 5

# ---- presets ----

PRESET_KEYS = {
    "negative_prompt",
    "model",
    "model_config",
    "size",
    "scale",
    "stages",
    "stage_rule",
    "steps",
    "guidance",
    "seed",
    "cosine_scale",
    "cosine_scale_bg",
    "dilate_tau",
    "restart",
    "fast_mode",
    "freeu",
    "blur",
    "mask",
    "image",
    "output",
    "save_stages",
    "bit_depth",
    "dpi",
    "pyramid",
    "device",
    "dtype",
    "prompt",
}


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in resources.files("freescale.configs").iterdir()
        if p.name.endswith(".yaml") and not p.name.startswith("ray")
    )


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name (`4k`) from configs/, or a YAML file path; unknown keys are an error."""
    if os.path.isfile(name_or_path):
        with open(name_or_path, encoding="utf-8") as handle:
            source, text = name_or_path, handle.read()
    else:
        resource = resources.files("freescale.configs") / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise ConfigError(
                f"--preset {name_or_path!r} is neither a file nor one of: {', '.join(preset_names())}"
            )
        source, text = f"{name_or_path}.yaml", resource.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"preset {source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset {source} must be a mapping of option names to values")
    unknown = sorted(set(data) - PRESET_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in preset {source}; allowed: {', '.join(sorted(PRESET_KEYS))}"
        )
    return data


def build_config(values: dict[str, Any], native_size: int) -> RenderConfig:
    """Make a RenderConfig from merged preset and flag values (flags already override the preset)."""
    values = {k: v for k, v in values.items() if v is not None}
    stages = resolve_stages(
        native_size,
        values.pop("stages", None),
        values.pop("size", None),
        values.pop("scale", None),
        values.pop("stage_rule", "double"),
    )
    if "freeu" in values:
        values["freeu"] = parse_freeu(values["freeu"])
    typed = {
        "bit_depth": int,
        "dpi": int,
        "steps": int,
        "seed": int,
        "dilate_tau": int,
        "guidance": float,
        "cosine_scale": float,
        "cosine_scale_bg": float,
        "restart": float,
    }
    for key, kind in typed.items():
        if key in values:
            values[key] = _number(values[key], f"--{key.replace('_', '-')}", kind)
    if "prompt" not in values:
        raise ConfigError("no prompt: give the text to render")
    return RenderConfig(stages=stages, native_size=native_size, **values)
