"""The one rule for a model's VAE scale, VAE upcasting and native resolution, read from its configs
(config objects or JSON dicts), so inputs are checked before anything is loaded."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from freescale.errors import ConfigError
from freescale.models.config_files import read_json_config
from freescale.models.model_source import ModelSource

# Every built-in tiny model is built for 128 px: a 16-row latent with the 8x VAE.
TINY_NATIVE_SIZE = 128


def _field(config: Any, name: str) -> Any:
    return config[name] if isinstance(config, Mapping) else getattr(config, name)


def vae_scale_from_config(vae_config: Any) -> int:
    """Pixels per latent row: each VAE level but the last halves the resolution."""
    return 2 ** (len(_field(vae_config, "block_out_channels")) - 1)


def vae_force_upcast(vae_config: Any) -> bool:
    """Whether the VAE must run in fp32 under an fp16 UNet; a config without the field gets diffusers'
    AutoencoderKL default (True), as SD1.5's VAE config does."""
    value = (
        vae_config.get("force_upcast", True) if isinstance(vae_config, Mapping) else vae_config.force_upcast
    )
    return bool(value)


def native_size_from_configs(unet_config: Any, vae_config: Any) -> int:
    """Pixel size the model was trained at: latent sample_size times the VAE's downsampling factor."""
    return int(_field(unet_config, "sample_size")) * vae_scale_from_config(vae_config)


def read_component_config(model_dir: str, component: str) -> dict[str, Any]:
    """<model_dir>/<component>/config.json; a missing or broken file is a ConfigError naming it."""
    return read_json_config(os.path.join(model_dir, component, "config.json"))


def native_size_of(source: ModelSource) -> int:
    """The native size of a checked model source, from its config files (built-in models: known)."""
    if source.kind == "tiny":
        return TINY_NATIVE_SIZE
    config_dir = source.path if source.kind == "directory" else source.config_dir
    if config_dir is None:
        raise ConfigError(f"model source {source!r} is not valid; build it with resolve_model_source")
    return native_size_from_configs(
        read_component_config(config_dir, "unet"), read_component_config(config_dir, "vae")
    )
