"""What planning needs to know about a model, read without loading it: native size, UNet profile, VAE
tile geometry and every component's parameter count (config files and safetensors headers only)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

from freescale.errors import ConfigError
from freescale.models.families import ModelFamily, family_of_source
from freescale.models.model_source import resolve_model_source
from freescale.models.native_resolution import (
    native_size_from_configs,
    read_component_config,
    vae_force_upcast,
    vae_scale_from_config,
)
from freescale.models.safetensors_header import tensor_element_counts
from freescale.planning.cost_calibration import builtin_model, builtin_model_names, builtin_profile
from freescale.planning.unet_profile import UNetProfile, architecture_key

_UNET_PREFIX = "model.diffusion_model."
_VAE_PREFIX = "first_stage_model."
# Original-layout prefix of a family's text encoders (SDXL: both embedders; SD1.x / SD2.x: the one).
_TEXT_PREFIXES = {"sdxl": "conditioner.embedders.", "sd15": "cond_stage_model.", "sd21": "cond_stage_model."}
# The built-in model whose encoders and VAE stand in for a family's when no safetensors can be read.
_REFERENCE_MODEL = {"sdxl": "sdxl", "sd15": "sd15", "sd21": "sd15"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    native_size: int
    unet: UNetProfile
    text_parameters: int  # every text encoder (SDXL: both)
    vae_parameters: int
    vae_tile: int  # diffusers' tile_sample_min_size (the VAE config's sample_size), pixels
    vae_scale: int  # pixels per latent row
    vae_force_upcast: bool  # the VAE stays fp32 when the UNet runs in fp16

    def weights_bytes(self, dtype_bytes: int) -> int:
        """Every component a worker holds, in the worker's dtype (the VAE in fp32 if it must be)."""
        vae_bytes = 4 if self.vae_force_upcast and dtype_bytes == 2 else dtype_bytes
        return (self.unet.parameters + self.text_parameters) * dtype_bytes + self.vae_parameters * vae_bytes

    def vae_dtype_bytes(self, dtype_bytes: int) -> int:
        return 4 if self.vae_force_upcast and dtype_bytes == 2 else dtype_bytes


def _component_parameters(directory: str, component: str) -> int | None:
    """Parameters of a diffusers component folder from its safetensors headers (None without them)."""
    files = sorted(glob.glob(os.path.join(directory, component, "*.safetensors")))
    plain = [f for f in files if ".fp16." not in os.path.basename(f)]
    files = plain or files  # one variant only: the fp16 files duplicate the plain ones
    if not files:
        return None
    return sum(sum(tensor_element_counts(f).values()) for f in files)


def unet_profile_for(config: dict[str, Any]) -> UNetProfile:
    """The stored profile of this architecture, else one counted now on a meta-device UNet (seconds)."""
    stored = builtin_profile(architecture_key(config))
    if stored is not None:
        return stored
    from freescale.planning.unet_profile import build_meta_unet, profile_unet

    return profile_unet(build_meta_unet(config), config)


def _from_configs(
    name: str, config_dir: str, family: ModelFamily, counts: dict[str, int | None]
) -> ModelSpec:
    unet_config = read_component_config(config_dir, "unet")
    vae_config = read_component_config(config_dir, "vae")
    reference = builtin_model(_REFERENCE_MODEL[family.name])
    sample = vae_config.get("sample_size", reference["vae_tile"])
    return ModelSpec(
        name=name,
        native_size=native_size_from_configs(unet_config, vae_config),
        unet=unet_profile_for(unet_config),
        # Without safetensors to read, the family's reference encoders and VAE are the best guess.
        text_parameters=counts["text"] or reference["text_parameters"],
        vae_parameters=counts["vae"] or reference["vae_parameters"],
        vae_tile=int(sample[0] if isinstance(sample, list) else sample),
        vae_scale=vae_scale_from_config(vae_config),
        vae_force_upcast=vae_force_upcast(vae_config),
    )


def _builtin_spec(model: str) -> ModelSpec:
    data = builtin_model(model)
    profile = builtin_profile(model)
    assert profile is not None, f"cost_calibration.json lacks the {model} profile"
    return ModelSpec(
        name=model,
        native_size=data["native_size"],
        unet=profile,
        text_parameters=data["text_parameters"],
        vae_parameters=data["vae_parameters"],
        vae_tile=data["vae_tile"],
        vae_scale=data["vae_scale"],
        vae_force_upcast=data["vae_force_upcast"],
    )


def model_spec(model: str = "tiny", model_config: str | None = None) -> ModelSpec:
    """A built-in model ('tiny', 'tiny-sd15', and 'sdxl' / 'sd15': SDXL base's / SD1.5's architecture, no
    files needed), a diffusers directory or an original-layout .safetensors file (with `model_config`, or
    its own directory, for the configs)."""
    if model in builtin_model_names():
        if model_config is not None:
            raise ConfigError(f"model_config {model_config!r} is only used with a .safetensors model file")
        return _builtin_spec(model)
    # Planning reads configs and headers only, never weights: a config-only directory plans, a pickle is
    # no risk here.
    source = resolve_model_source(model, model_config, allow_pickle=True, weights=False)
    family = family_of_source(source)
    if source.kind == "directory":
        counts = {
            "text": sum(filter(None, (_component_parameters(source.path, c)
                                      for c in ("text_encoder", "text_encoder_2")))) or None,
            "vae": _component_parameters(source.path, "vae"),
        }  # fmt: skip
        return _from_configs(model, source.path, family, counts)
    tensors = tensor_element_counts(source.path) if source.path.endswith(".safetensors") else {}
    prefixes = {"unet": _UNET_PREFIX, "vae": _VAE_PREFIX, "text": _TEXT_PREFIXES[family.name]}
    counts = {
        part: sum(n for key, n in tensors.items() if key.startswith(prefix)) or None
        for part, prefix in prefixes.items()
    }
    return _from_configs(model, source.config_dir, family, counts)
