"""The values of a model's config files that loading and planning rely on (model_index.json entries, sizes
and widths in <component>/config.json), checked before anything is loaded, each failure one line."""

from __future__ import annotations

import os
from typing import Any

from freescale.errors import ConfigError
from freescale.models.config_files import read_json_config

# Per component: fields that must be there, and fields that may be absent or null; every one a positive
# whole number, or a non-empty list of them (diffusers takes per-block lists for several).
_REQUIRED = {
    "unet": ("sample_size", "in_channels", "block_out_channels"),
    "vae": ("block_out_channels", "latent_channels"),
}
_OPTIONAL = {
    "unet": (
        "out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
        "num_attention_heads", "transformer_layers_per_block", "norm_num_groups", "addition_time_embed_dim",
        "projection_class_embeddings_input_dim",
    ),
    "vae": ("in_channels", "out_channels", "sample_size", "layers_per_block", "norm_num_groups"),
    "text_encoder": (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "max_position_embeddings", "vocab_size", "projection_dim",
    ),
}  # fmt: skip
_OPTIONAL["text_encoder_2"] = _OPTIONAL["text_encoder"]
# Read as one number (the native size is sample_size times the VAE scale).
_SCALARS = {"unet": ("sample_size",)}


def _is_positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_positive_or_list(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_is_positive_or_list(v) for v in value)
    return _is_positive(value)


def check_component_config(directory: str, component: str) -> dict[str, Any]:
    """<directory>/<component>/config.json, read and with its sizes checked; returns it."""
    path = os.path.join(directory, component, "config.json")
    config = read_json_config(path)
    fields = [(name, True) for name in _REQUIRED.get(component, ())]
    fields += [(name, False) for name in _OPTIONAL.get(component, ())]
    for name, required in fields:
        value = config.get(name)
        if value is None and not required:
            continue
        scalar = name in _SCALARS.get(component, ())
        if not (_is_positive(value) if scalar else _is_positive_or_list(value)):
            shape = "a positive whole number" if scalar else "a positive whole number or a list of them"
            got = "missing" if name not in config else repr(value)
            raise ConfigError(f"model config {path}: {name} is {got}; it must be {shape}")
    if component == "vae":
        scaling = config.get("scaling_factor", 1.0)
        if isinstance(scaling, bool) or not isinstance(scaling, int | float) or not scaling > 0:
            raise ConfigError(f"model config {path}: scaling_factor {scaling!r} must be a positive number")
    return config


def check_model_index(directory: str, components: tuple[str, ...]) -> dict[str, Any]:
    """<directory>/model_index.json: a pipeline class name, and each of `components` listed as a
    [library, class] pair whose folder holds a config.json; returns it."""
    path = os.path.join(directory, "model_index.json")
    index = read_json_config(path)
    if not isinstance(index.get("_class_name"), str):
        name = index.get("_class_name")
        raise ConfigError(f"model config {path}: _class_name {name!r} is not a pipeline class name")
    for component in components:
        entry = index.get(component)
        pair = isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)
        if not pair:
            raise ConfigError(
                f"model config {path}: {component} is {entry!r}; it must be a [library, class] pair such as "
                '["diffusers", "UNet2DConditionModel"]'
            )
        if not os.path.isfile(os.path.join(directory, component, "config.json")):
            raise ConfigError(
                f"model directory {directory!r} lists {component} but has no {component}/config.json"
            )
    return index
