"""A LoRA file as a render uses it (path, weight, sha256), checked from its safetensors header alone: it
exists, is not a pickle unless allowed, and holds LoRA down/up pairs in a layout diffusers reads."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from freescale.errors import ConfigError
from freescale.models.safetensors_header import check_safetensors_file, read_safetensors_header
from freescale.models.weight_files import SAFETENSORS_SUFFIX, is_pickle_file

# diffusers / PEFT (lora_A, lora_B), older diffusers (lora.down, lora.up) and kohya (lora_down, lora_up).
_DOWN = re.compile(r"^(?P<module>.+?)\.(?:lora_A|lora\.down|lora_down|lora_linear_layer\.down)\.weight$")
_UP = re.compile(r"^(?P<module>.+?)\.(?:lora_B|lora\.up|lora_up|lora_linear_layer\.up)\.weight$")
_ALPHA = re.compile(r"^(?P<module>.+)\.alpha$")
_IGNORED = ("dora_scale",)  # diffusers drops DoRA scales with a warning
# Where a LoRA tensor goes: diffusers prefixes, then kohya's.
COMPONENT_PREFIXES = (
    ("unet.", "unet"), ("text_encoder.", "text_encoder"), ("text_encoder_2.", "text_encoder_2"),
    ("lora_unet_", "unet"), ("lora_te_", "text_encoder"), ("lora_te1_", "text_encoder"),
    ("lora_te2_", "text_encoder_2"),
)  # fmt: skip
_HASH_CHUNK = 1 << 20
_sha256_cache: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class LoraFile:
    path: str  # absolute
    weight: float
    sha256: str  # of the whole file: recipes record it, every worker checks its copy against it


@dataclass(frozen=True)
class LoraPair:
    """One adapted layer: where it goes, its name there, and its down/up shapes from the header."""

    component: str  # "unet", "text_encoder", "text_encoder_2"
    module: str  # the name after the component prefix (diffusers dots, or kohya underscores)
    kohya: bool
    down: tuple[int, ...]  # (rank, in[, kh, kw])
    up: tuple[int, ...]  # (out, rank[, 1, 1])


def file_sha256(path: str) -> str:
    """The file's sha256, cached per (path, size, mtime): a batch's jobs share one LoRA."""
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _sha256_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        _sha256_cache[key] = digest.hexdigest()
    return _sha256_cache[key]


def _component(module: str, path: str) -> tuple[str, str, bool]:
    for prefix, component in sorted(COMPONENT_PREFIXES, key=lambda p: -len(p[0])):
        if module.startswith(prefix):
            return component, module[len(prefix) :], prefix.startswith("lora_")
    prefixes = ", ".join(p for p, _ in COMPONENT_PREFIXES)
    raise ConfigError(
        f"--lora {path}: tensor {module!r} is for no known part of the model; LoRA tensor names start with "
        f"one of {prefixes}"
    )


def lora_pairs(path: str) -> list[LoraPair]:
    """The down/up pairs of a safetensors LoRA, from its header; anything else in it is an error."""
    _, header = read_safetensors_header(path)
    downs, ups = {}, {}
    for name, info in header.items():
        if name == "__metadata__" or _ALPHA.match(name) or name.endswith(_IGNORED):
            continue
        match = _DOWN.match(name) or _UP.match(name)
        if match is None:
            raise ConfigError(
                f"--lora {path} is not a LoRA: tensor {name!r} is not a LoRA down/up weight (expected "
                "names ending in lora_A/lora_B.weight or lora_down/lora_up.weight)"
            )
        (downs if match.re is _DOWN else ups)[match.group("module")] = tuple(info["shape"])
    if not downs:
        raise ConfigError(f"--lora {path} is not a LoRA: it holds no LoRA down/up weights")
    pairs = []
    for module in sorted(set(downs) | set(ups)):
        down, up = downs.get(module), ups.get(module)
        if down is None or up is None:
            raise ConfigError(
                f"--lora {path} is not a whole LoRA: {module!r} has a down or an up weight only"
            )
        if len(down) not in (2, 4) or len(up) != len(down) or up[1] != down[0]:
            raise ConfigError(
                f"--lora {path} is not a LoRA: {module!r} has down {list(down)} and up {list(up)}, which "
                "are not a rank-r pair"
            )
        component, name, kohya = _component(module, path)
        pairs.append(LoraPair(component, name, kohya, down, up))
    return pairs


def check_lora_path(path: str, allow_pickle: bool) -> None:
    """The file exists and is a safetensors LoRA, or (with `allow_pickle`) a pickle, unread here."""
    if not os.path.isfile(path):
        raise ConfigError(f"--lora {path}: no such file")
    if is_pickle_file(path):
        if not allow_pickle:
            raise ConfigError(
                f"--lora {path} is a pickle (loading one can run code it carries); convert it to "
                ".safetensors or pass --allow-pickle"
            )
        return
    if not path.endswith(SAFETENSORS_SUFFIX):
        raise ConfigError(f"--lora {path} is not a .safetensors file; LoRAs load from .safetensors files")
    check_safetensors_file(path)
    lora_pairs(path)


def lora_file(path: str, weight: float, allow_pickle: bool, sha256: str | None = None) -> LoraFile:
    """A checked LoRA file; `sha256` (from a recipe or checkpoint) must be the file's."""
    path = os.path.abspath(os.path.expanduser(path))
    check_lora_path(path, allow_pickle)
    actual = file_sha256(path)
    if sha256 is not None and sha256 != actual:
        raise ConfigError(
            f"--lora {path} has sha256 {actual[:16]}..., not the {sha256[:16]}... it was recorded with; "
            "give the same file or drop its sha256"
        )
    return LoraFile(path, float(weight), actual)


def verify_lora_file(lora: LoraFile) -> None:
    """A worker's copy of the file is the one the driver checked (a cluster may see another file)."""
    if not os.path.isfile(lora.path):
        raise ConfigError(f"--lora {lora.path}: no such file on this worker")
    actual = file_sha256(lora.path)
    if actual != lora.sha256:
        raise ConfigError(
            f"--lora {lora.path} has sha256 {actual[:16]}... here, not {lora.sha256[:16]}...; every worker "
            "needs the same file"
        )
