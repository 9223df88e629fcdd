"""Reading a model's JSON config files (model_index.json, <component>/config.json) without loading it."""

from __future__ import annotations

import json
from typing import Any

from freescale.errors import ConfigError


def read_json_config(path: str) -> dict[str, Any]:
    """A JSON object from a model's config file; a missing or broken file is a ConfigError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model config {path} is missing or not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"model config {path} is not a JSON object")
    return data
