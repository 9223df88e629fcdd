"""SD1.5's architecture as numbers: the UNet config of Stable Diffusion v1.5 and the parameter counts of
its text encoder and VAE, for the cost model's built-in 'sd15' (nothing is downloaded)."""

from __future__ import annotations

SD15_NATIVE_SIZE = 512

# runwayml/stable-diffusion-v1-5 unet/config.json, the fields that shape the network.
SD15_UNET_CONFIG: dict = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "attention_head_dim": 8,  # SD1.5's config: really the number of heads (40, 80, 160 wide)
    "norm_num_groups": 32,
    "cross_attention_dim": 768,
    "use_linear_projection": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}
SD15_UNET_PARAMETERS = 859_520_964
SD15_TEXT_PARAMETERS = 123_060_480  # CLIP ViT-L/14's text tower
SD15_VAE_PARAMETERS = 83_653_863  # the same AutoencoderKL architecture as SDXL's
