"""Reads the JSON header of a safetensors file (tensor names, dtypes, shapes, offsets) without the tensors."""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

from freescale.errors import ConfigError

# Headers of real checkpoints are a few hundred KB; anything near this is not a safetensors file.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
# Bytes per element of the safetensors dtypes; a dtype not listed here is checked for its offsets only.
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8,
}  # fmt: skip


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


def _tensor_span(path: str, name: str, info: Any) -> tuple[int, int]:
    """[begin, end) of one tensor's bytes in the data area, checked against its dtype and shape."""
    bad = f"model file {path!r} is not a valid safetensors file (tensor {name!r}: "
    if not isinstance(info, dict):
        raise ConfigError(bad + "entry is not an object)")
    offsets, shape = info.get("data_offsets"), info.get("shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)):
        raise ConfigError(bad + f"data_offsets {offsets!r} are not two byte offsets)")
    if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
        raise ConfigError(bad + f"shape {shape!r} is not a list of sizes)")
    begin, end = offsets
    if end < begin:
        raise ConfigError(bad + f"data_offsets {offsets!r} end before they begin)")
    width = _DTYPE_BYTES.get(info.get("dtype"))
    if width is not None and math.prod(shape) * width != end - begin:
        raise ConfigError(bad + f"{info.get('dtype')} {shape} needs {math.prod(shape) * width} bytes, "
                          f"its offsets hold {end - begin})")  # fmt: skip
    return begin, end


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_safetensors_file(path: str) -> None:
    """A safetensors file whose header agrees with itself and with the file's size: every tensor's bytes
    fit its dtype and shape, the tensors tile the data area without gaps or overlaps, and the data area
    is exactly what the file holds (a truncated download fails here, before anything is loaded)."""
    raw, header = read_safetensors_header(path)
    data_size = os.path.getsize(path) - len(raw)
    spans = sorted(_tensor_span(path, name, info) for name, info in header.items() if name != "__metadata__")
    covered = 0
    for begin, end in spans:
        if begin != covered:
            raise ConfigError(
                f"model file {path!r} is not a valid safetensors file (tensor data overlaps or has a gap "
                f"at byte {min(begin, covered)})"
            )
        covered = end
    if covered != data_size:
        state = "truncated" if covered > data_size else "longer than its header says"
        raise ConfigError(
            f"model file {path!r} is {state}: its header describes {covered} bytes of tensor data, the "
            f"file holds {data_size}"
        )
