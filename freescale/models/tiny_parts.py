"""Parts the built-in tiny models share: a small CLIP text encoder config over the byte tokenizer, a small
4-level VAE (scale 8) and the Euler scheduler with Stable Diffusion's training noise schedule."""

from diffusers import AutoencoderKL, EulerDiscreteScheduler
from transformers import CLIPTextConfig

from freescale.models.byte_tokenizer import BYTE_VOCAB_SIZE, END_TOKEN, START_TOKEN, build_byte_tokenizer
from freescale.models.native_resolution import TINY_NATIVE_SIZE

MAX_TOKENS = 77


def tiny_text_config(hidden: int, layers: int, heads: int, act: str, projection_dim: int) -> CLIPTextConfig:
    tokenizer = build_byte_tokenizer(MAX_TOKENS)
    return CLIPTextConfig(
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        projection_dim=projection_dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=MAX_TOKENS,
        hidden_act=act,
        # The pooled output is taken at the first eos token, so the ids must be the byte tokenizer's.
        bos_token_id=tokenizer.convert_tokens_to_ids(START_TOKEN),
        eos_token_id=tokenizer.convert_tokens_to_ids(END_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(END_TOKEN),
    )


def tiny_vae(scaling_factor: float) -> AutoencoderKL:
    """Four levels like the real VAEs (8 px per latent row), tiles of the tiny native size."""
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
        scaling_factor=scaling_factor,
        force_upcast=True,
    )


def tiny_scheduler() -> EulerDiscreteScheduler:
    """Euler over SD's scaled-linear betas: deterministic and stateless, so mid-stage checkpoints work."""
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
