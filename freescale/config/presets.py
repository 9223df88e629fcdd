"""Presets (YAML files of render settings) and recipes (an output's sidecar .json) as preset-style values,
every key known and every value of its option's type (shared with batch jobs)."""

from __future__ import annotations

import json
import os
import typing
from importlib import resources
from typing import Any

import yaml

from freescale.config.options import DERIVED, RENDER, Option, all_options, preset_keys
from freescale.errors import ConfigError
from freescale.models.lora_files import LoraFile

# Every setting a preset (or a recipe) may give: the render options a flag may also give, but --overwrite.
PRESET_KEYS = preset_keys()
# What a recipe holds (renderer.recipe): every RenderConfig field, and what the renderer adds about the
# model and the output it describes.
RECIPE_KEYS = frozenset(o.name for o in all_options() if o.is_field) | {
    "model_identity",
    "freescale_version",
    "stage",
}
# Options read as a size (parse_size), which takes one number for a square as well as WIDTHxHEIGHT text.
_SIZE_OPTIONS = ("size", "stages")
_OPTIONS = {o.name: o for o in all_options() if o.role in (RENDER, DERIVED)}


def preset_names() -> list[str]:
    return sorted(
        p.name[:-5]
        for p in resources.files("freescale.configs").iterdir()
        if p.name.endswith(".yaml") and not p.name.startswith("ray")
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list_items(o: Option) -> tuple[typing.Callable[[Any], bool], str] | None:
    """What the items of a list value must be, for an option whose field is a tuple (stages, freeu)."""
    tuple_type = next(
        (t for t in (o.annotation, *typing.get_args(o.annotation)) if typing.get_origin(t) is tuple), None
    )
    if tuple_type is None:
        return None
    item = typing.get_args(tuple_type)[0]
    if item is float:
        return _is_number, "numbers"
    if item is LoraFile:  # FILE[:WEIGHT] text, or a recipe's {path, weight, sha256}
        return (lambda v: isinstance(v, str | dict)), "FILE[:WEIGHT] texts or {path, weight} mappings"
    return (lambda v: isinstance(v, str) or _is_whole(v)), "sizes (WIDTHxHEIGHT or one number)"


def _expected(o: Option) -> tuple[typing.Callable[[Any], bool], str]:
    """A check of a preset-style value of `o`, and what it expects, from the option's definition."""
    if o.switch or o.type is bool:
        return (lambda v: isinstance(v, bool)), "true or false"
    if o.type is int:
        return _is_whole, "a whole number"
    if o.type is float:
        return _is_number, "a number"
    items = _list_items(o)
    if items is not None:
        is_item, what = items
        # A list of items, or the text a flag takes; FreeU may also be switched on or off.
        on_off = o.off_flag is not None
        return (
            lambda v: (
                isinstance(v, str)
                or (on_off and isinstance(v, bool))
                or (isinstance(v, list) and all(is_item(i) for i in v))
            )
        ), f"text or a list of {what}" + (", or true/false" if on_off else "")
    if o.name in _SIZE_OPTIONS:
        return (lambda v: isinstance(v, str) or _is_whole(v)), "WIDTHxHEIGHT text or one number"
    return (lambda v: isinstance(v, str)), "text"


def check_text(value: str, what: str) -> None:
    """Text a render uses: no NUL byte, and valid UTF-8 (Python decodes bad bytes in sys.argv and in
    files read with surrogateescape as lone surrogates); anything but text is left to its own checks."""
    if not isinstance(value, str):
        return
    if "\0" in value:
        raise ConfigError(f"{what} contains a NUL byte")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start].encode("utf-8", "surrogateescape")
        raise ConfigError(
            f"{what} is not valid UTF-8 (byte 0x{bad.hex()} at character {exc.start}); save it as UTF-8"
        ) from None


def check_values(values: dict[str, Any], source: str, allowed: frozenset[str] = PRESET_KEYS) -> None:
    """Every key known and every value of its option's type; None stands for the option's default."""
    for key in values:
        if key not in allowed:
            raise ConfigError(f"unknown key {key!r} in {source}; allowed: {', '.join(sorted(allowed))}")
    for key, value in values.items():
        o = _OPTIONS.get(key)
        if value is None or o is None:
            continue
        accepts, expected = _expected(o)
        if not accepts(value):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ConfigError(f"{source}: {key} is {shown} ({type(value).__name__}); expected {expected}")
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                check_text(text, f"{source}: {key}")


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid UTF-8 (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name (`4k`) from configs/, or a YAML file path; unknown keys and values of the wrong type
    are an error."""
    if os.path.isfile(name_or_path):
        source, text = name_or_path, _read_text(name_or_path, "preset")
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
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"preset {source} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset {source} must be a mapping of option names to values")
    check_values(data, f"preset {source}")
    return data


def load_recipe(path: str) -> dict[str, Any]:
    """The render options of a recipe (an output's sidecar .json) as preset-style values."""
    try:
        with open(path, "rb") as handle:
            recipe = json.loads(handle.read().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--from-recipe {path} is not valid UTF-8 (byte {exc.start})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--from-recipe {path}: not a readable JSON recipe ({exc})") from None
    if not isinstance(recipe, dict) or "stages" not in recipe or "prompt" not in recipe:
        raise ConfigError(f"--from-recipe {path}: not a freescale recipe (no prompt and stages)")
    return recipe_values(recipe, f"recipe {path}")


def _stages_text(stages: Any, source: str) -> str:
    """A recipe's stages, [[h, w], ...], as the text a user would write."""
    pairs = isinstance(stages, list) and all(
        isinstance(s, list) and len(s) == 2 and all(_is_whole(n) for n in s) for s in stages
    )
    if not pairs:
        shown = repr(stages) if len(repr(stages)) <= 60 else repr(stages)[:57] + "..."
        raise ConfigError(f"{source}: stages is {shown}; expected a list of [height, width] pairs")
    return ",".join(f"{w}x{h}" for h, w in stages)


def recipe_values(recipe: dict[str, Any], source: str = "recipe") -> dict[str, Any]:
    """A recipe's render options as preset-style values (stages as the text a user would write); a key no
    recipe has, or a value of the wrong type, is an error."""
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        allowed = ", ".join(sorted(RECIPE_KEYS))
        raise ConfigError(f"unknown key {unknown[0]!r} in {source}; allowed: {allowed}")
    values = {k: v for k, v in recipe.items() if k in PRESET_KEYS}
    values["stages"] = _stages_text(recipe.get("stages"), source)
    check_values(values, source)
    return values
