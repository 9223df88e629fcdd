"""Which weight files a model holds: safetensors are checked against their headers before loading; pickles
(.bin, .ckpt, .pt, .pth: unpickling can run code the file carries) are refused unless allowed."""

from __future__ import annotations

import os

from freescale.errors import ConfigError
from freescale.models.safetensors_header import check_safetensors_file

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"


def is_pickle_file(path: str) -> bool:
    return path.lower().endswith(PICKLE_SUFFIXES)


def refuse_pickle(path: str) -> ConfigError:
    return ConfigError(
        f"model weights {path} are a pickle (loading one can run code it carries); convert them to "
        ".safetensors or pass --allow-pickle"
    )


def check_component_weights(folder: str, allow_pickle: bool, required: bool = True) -> bool:
    """The weights of one component folder (unet/, vae/, ...): every .safetensors file consistent with its
    header; a folder with only pickles refused unless `allow_pickle`; none at all refused if `required`.
    Returns whether the folder's weights are safetensors (False: pickles, or none)."""
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    safetensors = [n for n in names if n.endswith(SAFETENSORS_SUFFIX)]
    pickles = [n for n in names if is_pickle_file(n)]
    for name in safetensors:
        check_safetensors_file(os.path.join(folder, name))
    if safetensors:
        return True
    if pickles and not allow_pickle:
        raise refuse_pickle(os.path.join(folder, pickles[0]))
    if not pickles and required:
        raise ConfigError(f"model component {folder} holds no weights (a {SAFETENSORS_SUFFIX} file)")
    return False
