"""What planning needs to know about a model, read without loading it: native size, UNet profile, VAE
tile geometry and every component's parameter count (config files and safetensors headers only)."""

from __future__ import annotations

import glob
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from freescale.errors import ConfigError
from freescale.planning.cost_calibration import builtin_model, builtin_profile
from freescale.planning.unet_profile import UNetProfile, architecture_key

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}
_SINGLE_FILE_PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text": "conditioner.embedders.",
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    native_size: int
    unet: UNetProfile
    text_parameters: int  # both text encoders
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


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from None


def _safetensors_counts(path: str) -> dict[str, int]:
    """Element count of every tensor in a safetensors file, from its header alone."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    counts = {}
    for name, info in header.items():
        if name != "__metadata__":
            numel = 1
            for d in info["shape"]:
                numel *= d
            counts[name] = numel
    return counts


def _component_parameters(directory: str, component: str) -> int | None:
    """Parameters of a diffusers component folder from its safetensors headers (None without them)."""
    files = sorted(glob.glob(os.path.join(directory, component, "*.safetensors")))
    plain = [f for f in files if ".fp16." not in os.path.basename(f)]
    files = plain or files  # one variant only: the fp16 files duplicate the plain ones
    if not files:
        return None
    return sum(sum(_safetensors_counts(f).values()) for f in files)


def unet_profile_for(config: dict[str, Any]) -> UNetProfile:
    """The stored profile of this architecture, else one counted now on a meta-device UNet (seconds)."""
    stored = builtin_profile(architecture_key(config))
    if stored is not None:
        return stored
    from freescale.planning.unet_profile import build_meta_unet, profile_unet

    return profile_unet(build_meta_unet(config), config)


def _from_configs(name: str, config_dir: str, counts: dict[str, int | None]) -> ModelSpec:
    unet_config = _read_json(os.path.join(config_dir, "unet", "config.json"))
    vae_config = _read_json(os.path.join(config_dir, "vae", "config.json"))
    profile = unet_profile_for(unet_config)
    scale = 2 ** (len(vae_config["block_out_channels"]) - 1)
    reference = builtin_model("sdxl")
    sample = vae_config.get("sample_size", 1024)
    return ModelSpec(
        name=name,
        native_size=int(unet_config["sample_size"]) * scale,
        unet=profile,
        # Without safetensors to read, SDXL's encoders and VAE are the best guess for an SDXL-family model.
        text_parameters=counts["text"] or reference["text_parameters"],
        vae_parameters=counts["vae"] or reference["vae_parameters"],
        vae_tile=int(sample[0] if isinstance(sample, list) else sample),
        vae_scale=scale,
        vae_force_upcast=bool(vae_config.get("force_upcast", False)),
    )


def model_spec(model: str = "tiny", model_config: str | None = None) -> ModelSpec:
    """'tiny', 'sdxl' (SDXL base's architecture, no files needed), a diffusers directory or an
    original-layout .safetensors file (with `model_config`, or its own directory, for the configs)."""
    if model in ("tiny", "sdxl"):
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
    from freescale.models.loading import resolve_model_source

    source = resolve_model_source(model, model_config)
    if source.kind == "directory":
        counts = {
            "text": sum(filter(None, (_component_parameters(source.path, c)
                                      for c in ("text_encoder", "text_encoder_2")))) or None,
            "vae": _component_parameters(source.path, "vae"),
        }  # fmt: skip
        return _from_configs(model, source.path, counts)
    tensors = _safetensors_counts(source.path)
    counts = {
        part: sum(n for key, n in tensors.items() if key.startswith(prefix)) or None
        for part, prefix in _SINGLE_FILE_PREFIXES.items()
    }
    return _from_configs(model, source.config_dir, counts)
