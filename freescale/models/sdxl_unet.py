"""SDXL's UNet architecture with random weights: the real model's compute and memory without its weights,
for benchmarks and the cost model (nothing is downloaded)."""

from __future__ import annotations

import torch

SDXL_NATIVE_SIZE = 1024

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, the fields that shape the network.
SDXL_UNET_CONFIG: dict = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),  # SDXL's config: really the number of heads (64 wide each)
    "norm_num_groups": 32,
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

_TEXT_TOKENS = 77


def build_sdxl_unet(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """SDXL's UNet with diffusers' default random initialisation, built directly on `device`."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    return unet.to(dtype).eval()


def random_unet_kwargs(unet, batch: int, size: tuple[int, int], seed: int = 0) -> dict:
    """Conditioning inputs of SDXL's shapes (text states, pooled text, micro-conditioning ids)."""
    generator = torch.Generator().manual_seed(seed)
    c = unet.config
    pooled_width = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    states = torch.randn(batch, _TEXT_TOKENS, c.cross_attention_dim, generator=generator)
    pooled = torch.randn(batch, pooled_width, generator=generator)
    time_ids = torch.tensor([[size[0], size[1], 0, 0, size[0], size[1]]] * batch, dtype=torch.float32)
    to = {"device": unet.device, "dtype": unet.dtype}
    return {
        "encoder_hidden_states": states.to(**to),
        "added_cond_kwargs": {"text_embeds": pooled.to(**to), "time_ids": time_ids.to(**to)},
    }
