"""Writes a diffusers SD1.x pipeline as one safetensors file in the original (LDM) checkpoint layout: the
shared UNet and VAE mapping plus the one CLIP-L text encoder under `cond_stage_model.transformer.`."""

import torch
from diffusers import StableDiffusionPipeline

from freescale.models.single_file_export import (
    hf_text_state,
    original_unet_and_vae_tensors,
    write_single_file,
)

_CLIP_PREFIX = "cond_stage_model.transformer."


def sd15_original_state_dict(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """UNet, VAE and text encoder of the pipeline under their original SD1.x checkpoint names."""
    tensors = original_unet_and_vae_tensors(pipe)
    tensors.update({_CLIP_PREFIX + k: v for k, v in hf_text_state(pipe.text_encoder).items()})
    return tensors


def export_sd15_single_file(pipe: StableDiffusionPipeline, path: str) -> None:
    """Writes `path` atomically."""
    write_single_file(sd15_original_state_dict(pipe), path)
