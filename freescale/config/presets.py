"""Presets (YAML files of render settings) and recipes (an output's sidecar .json) as preset-style values."""

from __future__ import annotations

import json
import os
from importlib import resources
from typing import Any

import yaml

from freescale.config.options import preset_keys
from freescale.errors import ConfigError

# Every setting a preset (or a recipe) may give: the render options a flag may also give, but --overwrite.
PRESET_KEYS = preset_keys()


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


def load_recipe(path: str) -> dict[str, Any]:
    """The render options of a recipe (an output's sidecar .json) as preset-style values."""
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
