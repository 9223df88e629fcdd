"""A whole SDXL pipeline at the real model's size with random weights, saved in diffusers layout, for renders
side by side with the reference code on a GPU (bench/reference_side_by_side.py --unet sdxl): SDXL's UNet and
VAE, and text encoders of SDXL's widths (768 and 1280, pooled 1280) but two layers over the byte tokenizer.
The encoders' depth does not matter there: both sides get the same prompt embeddings, encoded once.
"""

from __future__ import annotations

import torch
from vae_tile import SDXL_VAE_CONFIG  # bench/ is on the path of a script run from it

# SDXL's CLIP-L and OpenCLIP-bigG widths and heads; two layers each (SDXL: 12 and 32).
TEXT_ENCODER_WIDTHS = ((768, 12, "quick_gelu", 768), (1280, 20, "gelu", 1280))
TEXT_ENCODER_LAYERS = 2


def build_sdxl_size_pipeline(device: str, dtype: torch.dtype, seed: int = 0):
    """The pipeline, every module built directly on `device` in `dtype` (SDXL's UNet is 2.6 B parameters)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from freescale.models.sdxl_unet import build_sdxl_unet
    from freescale.models.tiny_parts import tiny_text_config
    from freescale.models.tiny_sdxl import byte_tokenized_sdxl_pipeline

    unet = build_sdxl_unet(device, dtype, seed)
    configs = [tiny_text_config(w, TEXT_ENCODER_LAYERS, h, act, p) for w, h, act, p in TEXT_ENCODER_WIDTHS]
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**SDXL_VAE_CONFIG)
        text_encoder = CLIPTextModel(configs[0])
        text_encoder_2 = CLIPTextModelWithProjection(configs[1])
    # SDXL's Euler schedule (scaled-linear betas, leading spacing), as the tiny model's
    pipe = byte_tokenized_sdxl_pipeline(unet, vae, text_encoder, text_encoder_2)
    return pipe.to(device, dtype)


def save_sdxl_size_model(directory: str, device: str, dtype: torch.dtype) -> None:
    """Builds the pipeline and saves it (safetensors) for both sides to load."""
    pipe = build_sdxl_size_pipeline(device, dtype)
    pipe.save_pretrained(directory, safe_serialization=True)
