"""Reads the JSON header of a safetensors file (tensor names, dtypes, shapes, offsets) without the tensors."""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from freescale.errors import ConfigError

# Headers of real checkpoints are a few hundred KB; anything near this is not a safetensors file.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: str) -> tuple[bytes, dict[str, Any]]:
    """The raw header bytes (length prefix included) and the parsed header; reads nothing else."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ConfigError(f"model file {path!r} is not a valid safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", prefix)
        if length < 2 or length > min(size - 8, _MAX_HEADER_BYTES):
            raise ConfigError(f"model file {path!r} is not a valid safetensors file (bad header length)")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"model file {path!r} is not a valid safetensors file (bad JSON header)") from None
    if not isinstance(header, dict):
        raise ConfigError(f"model file {path!r} is not a valid safetensors file (header is not an object)")
    return prefix + raw, header


def tensor_names(path: str) -> list[str]:
    """Every tensor name in the file (the `__metadata__` entry is not a tensor)."""
    _, header = read_safetensors_header(path)
    return [name for name in header if name != "__metadata__"]


def tensor_element_counts(path: str) -> dict[str, int]:
    """Element count of every tensor in the file, from its header alone."""
    _, header = read_safetensors_header(path)
    counts = {}
    for name, info in header.items():
        if name != "__metadata__":
            numel = 1
            for d in info["shape"]:
                numel *= d
            counts[name] = numel
    return counts
