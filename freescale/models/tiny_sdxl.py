"""A built-in tiny SDXL pipeline with random weights: SDXL's exact block topology and module names at toy
widths, so every code path (and the single-file format) can be exercised offline on a CPU in seconds."""

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from freescale.models.byte_tokenizer import BYTE_VOCAB_SIZE, END_TOKEN, START_TOKEN, build_byte_tokenizer

TINY_NATIVE_SIZE = 128

_MAX_TOKENS = 77
_TIME_EMBED_DIM = 8  # SDXL: 256
# The two encoders must differ in width: diffusers' single-file loader tells CLIP-L from OpenCLIP-bigG by
# comparing the hidden size in the checkpoint with the model's, as SDXL's 768 vs 1280 do.
_TEXT_1_HIDDEN = 32
_TEXT_2_HIDDEN = 64
_TEXT_2_PROJECTION = 32


def _text_config(hidden: int, layers: int, heads: int, act: str, projection_dim: int) -> CLIPTextConfig:
    tokenizer = build_byte_tokenizer(_MAX_TOKENS)
    return CLIPTextConfig(
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        projection_dim=projection_dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=_MAX_TOKENS,
        hidden_act=act,
        # The pooled output is taken at the first eos token, so the ids must be the byte tokenizer's.
        bos_token_id=tokenizer.convert_tokens_to_ids(START_TOKEN),
        eos_token_id=tokenizer.convert_tokens_to_ids(END_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(END_TOKEN),
    )


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
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=TINY_NATIVE_SIZE,
        scaling_factor=0.13025,
        force_upcast=True,
    )


def _scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        interpolation_type="linear",
        use_karras_sigmas=False,
        timestep_spacing="leading",
        steps_offset=1,
    )


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """The tiny SDXL pipeline; its fp32 weights depend only on `seed` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _unet()
        vae = _vae()
        text_encoder = CLIPTextModel(_text_config(_TEXT_1_HIDDEN, 2, 2, "quick_gelu", _TEXT_1_HIDDEN))
        text_encoder_2 = CLIPTextModelWithProjection(
            _text_config(_TEXT_2_HIDDEN, 2, 2, "gelu", _TEXT_2_PROJECTION)
        )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=build_byte_tokenizer(_MAX_TOKENS),
        tokenizer_2=build_byte_tokenizer(_MAX_TOKENS),
        unet=unet,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    # Default init is already sane: a 4-step 128 px run gives a finite mid-grey image with ~98% of the
    # pixels strictly inside (0, 255), so no weight rescaling is needed. Modules are built in fp32.
    for model in (unet, vae, text_encoder, text_encoder_2):
        model.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe
