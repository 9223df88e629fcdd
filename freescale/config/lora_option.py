"""`--lora FILE[:WEIGHT]` (repeatable) and a preset's or recipe's `lora:` list as checked LoRA files.

A value is "FILE" or "FILE:WEIGHT" (split on the last colon only when a number follows it, so Windows
drive letters and paths with colons stay paths), or a mapping {path, weight, sha256} as recipes store it."""

from __future__ import annotations

import math
import os
from typing import Any

from freescale.errors import ConfigError
from freescale.models.lora_files import LoraFile, lora_file
from freescale.models.weight_files import PICKLE_SUFFIXES, SAFETENSORS_SUFFIX

_MAPPING_KEYS = ("path", "weight", "sha256")
_LORA_SUFFIXES = (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES)


def _weight(value: Any, text: Any) -> float:
    if isinstance(value, bool):
        value = None
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = math.nan
    if not math.isfinite(weight):
        raise ConfigError(
            f"--lora {text!r}: weight {value!r} is not a number; use FILE:WEIGHT, e.g. a.safetensors:0.8"
        )
    return weight


def split_lora_text(text: str) -> tuple[str, float]:
    """'a.safetensors:0.8' -> ('a.safetensors', 0.8); 'C:\\a.safetensors' and 'a.safetensors' -> weight 1."""
    head, colon, tail = text.rpartition(":")
    if not colon or not head or os.path.isfile(text):
        return text, 1.0
    try:
        return head, _weight(tail, text)
    except ConfigError:
        if head.lower().endswith(_LORA_SUFFIXES):  # FILE:WORD: a weight that is not a number
            raise
        return text, 1.0


def _one_lora(value: Any, allow_pickle: bool) -> LoraFile:
    if isinstance(value, str):
        path, weight = split_lora_text(value)
        return lora_file(path, weight, allow_pickle)
    if isinstance(value, LoraFile):
        return lora_file(value.path, value.weight, allow_pickle, value.sha256)
    if isinstance(value, dict) and isinstance(value.get("path"), str) and set(value) <= set(_MAPPING_KEYS):
        sha256 = value.get("sha256")
        if sha256 is not None and not isinstance(sha256, str):
            raise ConfigError(f"--lora {value['path']}: sha256 {sha256!r} is not text")
        return lora_file(
            value["path"], _weight(value.get("weight", 1.0), value["path"]), allow_pickle, sha256
        )
    raise ConfigError(
        f"lora item {value!r} is not FILE[:WEIGHT] text or a mapping of {', '.join(_MAPPING_KEYS)} "
        "(path needed)"
    )


def parse_loras(value: Any, allow_pickle: bool) -> tuple[LoraFile, ...]:
    """None or [] -> (); one text or mapping, or a list of them -> checked LoRA files, in order."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(_one_lora(item, allow_pickle) for item in items)
