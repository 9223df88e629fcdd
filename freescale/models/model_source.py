"""Where a model comes from, checked before anything is loaded (config files and safetensors headers
only); imports nothing heavy, so the CLI and the config can validate a model argument cheaply."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from freescale.errors import ConfigError
from freescale.models.config_checks import check_component_config, check_model_index
from freescale.models.families import (
    BUILTIN_MODELS,
    ModelFamily,
    allowed_families,
    family_of_directory,
    family_of_single_file,
)
from freescale.models.lora_files import LoraFile
from freescale.models.safetensors_header import check_safetensors_file, tensor_names
from freescale.models.weight_files import check_component_weights, is_pickle_file, refuse_pickle

_UNET_KEY_PREFIX = "model.diffusion_model."
# The networks a pipeline loads weights for, in order; a family with one text encoder has no text_encoder_2.
MODEL_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "tiny" (a built-in model) | "directory" | "single_file"
    path: str | None
    config_dir: str | None
    # The built-in model's name ("tiny", "tiny-sd15") for kind "tiny"; None there means "tiny".
    name: str | None = None
    # Pickled weights (.bin, .ckpt, .pt) may load (--allow-pickle); otherwise only safetensors do.
    allow_pickle: bool = False
    # LoRAs fused into the weights at load time, in order (checked against the model's configs).
    lora: tuple[LoraFile, ...] = ()

    @property
    def builtin_name(self) -> str:
        return self.name or "tiny"


def _require_model_index(directory: str, what: str) -> None:
    if not os.path.isfile(os.path.join(directory, "model_index.json")):
        raise ConfigError(
            f"{what} {directory!r} has no model_index.json; expected a diffusers pipeline directory "
            f"of a supported family ({allowed_families()})"
        )


def _single_file_config_dir(model: str, path: str, model_config: str | None) -> str:
    if model_config is not None:
        config_dir = os.path.abspath(os.path.expanduser(model_config))
        if not os.path.isdir(config_dir):
            raise ConfigError(
                f"model_config {model_config!r} is not a directory; expected a diffusers pipeline directory "
                f"({allowed_families()})"
            )
        _require_model_index(config_dir, "model_config")
        return config_dir
    config_dir = os.path.dirname(path)
    if not os.path.isfile(os.path.join(config_dir, "model_index.json")):
        raise ConfigError(
            f"model file {model!r} needs a config directory: pass model_config (a diffusers pipeline "
            f"directory with model_index.json) or put one next to the file in {config_dir!r}"
        )
    return config_dir


def _require_unet_tensors(model: str, path: str) -> None:
    if not any(key.startswith(_UNET_KEY_PREFIX) for key in tensor_names(path)):
        raise ConfigError(
            f"model file {model!r} has no '{_UNET_KEY_PREFIX}*' tensors; expected an original-layout "
            f"checkpoint (UNet, VAE and text encoders in one file) of a family in {allowed_families()}"
        )


def _require_same_family(model: str, path: str, config_dir: str) -> None:
    family, config_family = family_of_single_file(path), family_of_directory(config_dir)
    if family != config_family:
        raise ConfigError(
            f"model file {model!r} is a {family.name} checkpoint but its config directory {config_dir!r} "
            f"is {config_family.name}; pass a model_config directory of the file's family"
        )


def family_components(family: ModelFamily) -> tuple[str, ...]:
    """The components a pipeline of `family` loads weights for (SD1.x / SD2.x: one text encoder)."""
    return MODEL_COMPONENTS[: 2 + family.text_encoders]


def _check_pipeline_directory(
    directory: str, allow_pickle: bool, weights_required: bool | None
) -> ModelFamily:
    """model_index.json, every loaded component's config values and weight files (a config directory of a
    single file may lack weights: the file holds them; None: configs only, weights are not looked at)."""
    family = family_of_directory(directory)  # an unsupported pipeline class fails here, naming the families
    components = family_components(family)
    check_model_index(directory, components)
    for component in components:
        check_component_config(directory, component)
        if weights_required is not None:
            check_component_weights(os.path.join(directory, component), allow_pickle, weights_required)
    return family


def resolve_model_source(
    model: str,
    model_config: str | None = None,
    allow_pickle: bool = False,
    weights: bool = True,
    lora: tuple[LoraFile, ...] = (),
) -> ModelSource:
    """The checked model source (see _resolve_source), with `lora` (checked LoRA files) checked to fit
    it from their headers and its configs; loads nothing but a built-in toy model's configs."""
    source = _resolve_source(model, model_config, allow_pickle, weights)
    if not lora:
        return source
    from freescale.models.lora_fit import check_loras_fit

    check_loras_fit(tuple(lora), source, model)
    return dataclasses.replace(source, lora=tuple(lora))


def _resolve_source(model: str, model_config: str | None, allow_pickle: bool, weights: bool) -> ModelSource:
    """Checks the model argument without loading anything.

    `model` is a built-in model ("tiny", "tiny-sd15"), a diffusers directory (with model_index.json) of a
    supported family, or an original-layout .safetensors file. A file needs a diffusers config directory:
    `model_config`, else the file's own directory when that holds a model_index.json. Configs are read and
    checked, safetensors files checked against their headers; pickled weights are refused unless
    `allow_pickle` (then a pickled single file's family is its config directory's). `weights=False` (for
    planning, which reads configs and headers only) leaves a directory's weight files unread.
    """
    builtins = ", ".join(repr(name) for name in BUILTIN_MODELS)
    if model in BUILTIN_MODELS:
        if model_config is not None:
            raise ConfigError(f"model_config {model_config!r} is only used with a .safetensors model file")
        return ModelSource(kind="tiny", path=None, config_dir=None, name=model, allow_pickle=allow_pickle)
    path = os.path.abspath(os.path.expanduser(model))
    if not os.path.exists(path):
        raise ConfigError(
            f"model {model!r} does not exist; use {builtins}, a diffusers pipeline directory "
            f"({allowed_families()}) or a .safetensors file"
        )
    if os.path.isdir(path):
        _require_model_index(path, "model directory")
        if model_config is not None:
            raise ConfigError(f"model_config {model_config!r} is only used with a .safetensors model file")
        _check_pipeline_directory(path, allow_pickle, weights_required=True if weights else None)
        return ModelSource(kind="directory", path=path, config_dir=None, allow_pickle=allow_pickle)
    if is_pickle_file(path):
        if not allow_pickle:
            raise refuse_pickle(path)
        config_dir = _single_file_config_dir(model, path, model_config)
        _check_pipeline_directory(config_dir, allow_pickle, weights_required=False if weights else None)
        return ModelSource(kind="single_file", path=path, config_dir=config_dir, allow_pickle=True)
    if not path.endswith(".safetensors"):
        raise ConfigError(
            f"model file {model!r} is not a .safetensors file; only safetensors single-file checkpoints load"
        )
    check_safetensors_file(path)
    _require_unet_tensors(model, path)
    config_dir = _single_file_config_dir(model, path, model_config)
    _require_same_family(model, path, config_dir)
    _check_pipeline_directory(config_dir, allow_pickle, weights_required=False if weights else None)
    return ModelSource(kind="single_file", path=path, config_dir=config_dir, allow_pickle=allow_pickle)
