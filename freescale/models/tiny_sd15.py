"""A built-in tiny SD1.5 pipeline with random weights: SD1.5's four-level block topology and module names
at toy widths (one CLIP text encoder, no added conditioning), to exercise the second family offline."""

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from freescale.models.byte_tokenizer import build_byte_tokenizer
from freescale.models.tiny_parts import (
    MAX_TOKENS,
    TINY_NATIVE_SIZE,
    tiny_scheduler,
    tiny_text_config,
    tiny_vae,
)

TINY_SD15_MODEL = "tiny-sd15"
_TEXT_HIDDEN = 32  # SD1.5's CLIP-L: 768


def _unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=TINY_NATIVE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        mid_block_type="UNetMidBlock2DCrossAttn",
        # SD1.5: (320, 640, 1280, 1280); the widest width and the next lower one stay distinct, as FreeU's
        # channel rule (C_top 1280, C_mid 640 there) needs.
        block_out_channels=(32, 64, 128, 128),
        layers_per_block=2,
        # As in SD1.5's config, this field is really the number of heads (8 there).
        attention_head_dim=2,
        norm_num_groups=8,
        cross_attention_dim=_TEXT_HIDDEN,
        use_linear_projection=False,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def build_tiny_sd15_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The tiny SD1.5 pipeline; its fp32 weights depend only on `seed` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _unet()
        vae = tiny_vae(scaling_factor=0.18215)  # SD1.5's latent scaling
        text_encoder = CLIPTextModel(tiny_text_config(_TEXT_HIDDEN, 2, 2, "quick_gelu", _TEXT_HIDDEN))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_byte_tokenizer(MAX_TOKENS),
        unet=unet,
        scheduler=tiny_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for model in (unet, vae, text_encoder):
        model.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
