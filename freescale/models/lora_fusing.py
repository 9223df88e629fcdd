"""LoRAs fused into a loaded pipeline's weights (diffusers' load_lora_weights, fuse_lora, then
unload_lora_weights), one after another, leaving plain Linear / Conv2d modules with merged weights: the
method's module patches (scale attention, dilation, band sharding) find the layers they know."""

from __future__ import annotations

from typing import Any

import torch

from freescale.errors import ConfigError
from freescale.models.lora_files import LoraFile, verify_lora_file
from freescale.models.weight_files import is_pickle_file

_FUSABLE = ("unet", "text_encoder", "text_encoder_2")
_ADAPTER = "freescale_lora"


def _state_dict(lora: LoraFile) -> dict[str, torch.Tensor]:
    # Read here rather than by diffusers, so that nothing looks for a file anywhere else (offline).
    if is_pickle_file(lora.path):  # allowed by --allow-pickle; unpickled with weights_only
        state = torch.load(lora.path, map_location="cpu", weights_only=True)
    else:
        from safetensors.torch import load_file

        state = load_file(lora.path)
    if not isinstance(state, dict):
        raise ConfigError(f"--lora {lora.path} does not hold a state dict of LoRA tensors")
    return state


def _check_plain(pipe: Any) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for component in _FUSABLE:
        model = getattr(pipe, component, None)
        if model is not None and any(isinstance(m, BaseTunerLayer) for m in model.modules()):
            raise RuntimeError(f"LoRA layers are left in the {component} after fusing")


def fuse_loras(pipe: Any, loras: tuple[LoraFile, ...]) -> None:
    """W += weight * (up @ down) * alpha / rank for each LoRA in order, in the pipeline's own dtype and
    device; the LoRA layers are removed again, so the modules are the model's own classes."""
    for lora in loras:
        verify_lora_file(lora)
        try:
            pipe.load_lora_weights(_state_dict(lora), adapter_name=_ADAPTER)
        except (ValueError, KeyError, RuntimeError) as exc:  # a layout diffusers cannot map to this model
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"--lora {lora.path} does not load into this model: {first}") from None
        present = [c for c in _FUSABLE if getattr(pipe, c, None) is not None]
        pipe.fuse_lora(components=present, lora_scale=lora.weight, adapter_names=[_ADAPTER])
        pipe.unload_lora_weights()
    _check_plain(pipe)


def lora_identity(identity: str, loras: tuple[LoraFile, ...]) -> str:
    """The model identity with each fused LoRA: another file or weight is another model."""
    return identity + "".join(f" + lora(sha256 {lora.sha256}, weight {lora.weight:g})" for lora in loras)
