"""A built-in tiny SDXL pipeline with random weights: SDXL's exact block topology and module names at toy
widths, so every code path (and the single-file format) can be exercised offline on a CPU in seconds."""

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from freescale.models.byte_tokenizer import build_byte_tokenizer
from freescale.models.tiny_parts import MAX_TOKENS, tiny_scheduler, tiny_text_config, tiny_vae
from freescale.models.tiny_parts import TINY_NATIVE_SIZE as TINY_NATIVE_SIZE  # re-exported: callers use it

_TIME_EMBED_DIM = 8  # SDXL: 256
# The two encoders must differ in width: diffusers' single-file loader tells CLIP-L from OpenCLIP-bigG by
# comparing the hidden size in the checkpoint with the model's, as SDXL's 768 vs 1280 do.
_TEXT_1_HIDDEN = 32
_TEXT_2_HIDDEN = 64
_TEXT_2_PROJECTION = 32


def _unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2, 2),
        # As in SDXL's config, this field is really the number of heads (head width 32 everywhere here).
        attention_head_dim=(1, 2, 4),
        norm_num_groups=8,
        cross_attention_dim=_TEXT_1_HIDDEN + _TEXT_2_HIDDEN,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=_TIME_EMBED_DIM,
        # 6 micro-conditioning numbers (original size, crop offset, target size) + the pooled text embedding.
        projection_class_embeddings_input_dim=6 * _TIME_EMBED_DIM + _TEXT_2_PROJECTION,
        flip_sin_to_cos=True,
        freq_shift=0,
    )


def _vae() -> AutoencoderKL:
    return tiny_vae(scaling_factor=0.13025)  # SDXL's latent scaling


def byte_tokenized_sdxl_pipeline(unet, vae, text_encoder, text_encoder_2) -> StableDiffusionXLPipeline:
    """An SDXL pipeline of these modules over the byte tokenizer and SD's Euler schedule: the tiny model's
    assembly, also used for SDXL-size random-weight pipelines in bench/."""
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=build_byte_tokenizer(MAX_TOKENS),
        tokenizer_2=build_byte_tokenizer(MAX_TOKENS),
        unet=unet,
        scheduler=tiny_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """The tiny SDXL pipeline; its fp32 weights depend only on `seed` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _unet()
        vae = _vae()
        text_encoder = CLIPTextModel(tiny_text_config(_TEXT_1_HIDDEN, 2, 2, "quick_gelu", _TEXT_1_HIDDEN))
        text_encoder_2 = CLIPTextModelWithProjection(
            tiny_text_config(_TEXT_2_HIDDEN, 2, 2, "gelu", _TEXT_2_PROJECTION)
        )
    pipe = byte_tokenized_sdxl_pipeline(unet, vae, text_encoder, text_encoder_2)
    # Default init is already sane: a 4-step 128 px run gives a finite mid-grey image with ~98% of the
    # pixels strictly inside (0, 255), so no weight rescaling is needed. Modules are built in fp32.
    for model in (unet, vae, text_encoder, text_encoder_2):
        model.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
