"""The model's native resolution read from its config files alone, so inputs are checked before loading."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

from freescale.errors import ConfigError
from freescale.models.loading import ModelSource, native_size_from_configs
from freescale.models.tiny_sdxl import TINY_NATIVE_SIZE


def native_size_of(source: ModelSource) -> int:
    if source.kind == "tiny":
        return TINY_NATIVE_SIZE
    config_dir = source.path if source.kind == "directory" else source.config_dir
    configs = []
    for component in ("unet", "vae"):
        path = os.path.join(config_dir, component, "config.json")
        try:
            with open(path, encoding="utf-8") as handle:
                configs.append(SimpleNamespace(**json.load(handle)))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"model config {path} is missing or not valid JSON ({exc})") from None
    return native_size_from_configs(*configs)
