"""Text conditioning of a render, per family: SDXL's two encoders give prompt embeddings, pooled embeddings
and micro-conditioning ids; SD1.x / SD2.x's one encoder gives prompt embeddings alone."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from freescale.models.prompt_length import warn_if_truncated
from freescale.tiling.stages import Size

# UNet config `addition_embed_type` -> what the UNet is conditioned on besides the text states.
_SDXL_ADDITION = "text_time"  # pooled text embedding + micro-conditioning ids (SDXL)
_NO_ADDITION = None  # text states only (SD1.x, SD2.x)


@dataclass(frozen=True)
class Conditioning:
    """UNet inputs that stay fixed for the whole render; batch is [negative, positive] under guidance.

    `pooled_embeds` and `time_ids` are None for a UNet that takes no added conditioning (SD1.x, SD2.x).
    """

    prompt_embeds: torch.Tensor
    pooled_embeds: torch.Tensor | None
    time_ids: torch.Tensor | None
    guidance: float
    frames: int | None = None  # a motion UNet's clip length: its text states are given once per frame

    @property
    def uses_guidance(self) -> bool:
        return self.guidance > 1.0

    def unet_kwargs(self, half: int | None = None) -> dict:
        """The whole batch, or with `half` only the negative (0) or positive (1) row of it."""
        embeds, pooled, time_ids = self.prompt_embeds, self.pooled_embeds, self.time_ids
        if half is not None:
            embeds = embeds[half : half + 1]
        if self.frames is not None:
            # diffusers' motion UNets fold frames into the batch: (B, C, F, h, w) -> (B*F, ...), clip-major.
            embeds = embeds.repeat_interleave(self.frames, dim=0)
        if pooled is None or time_ids is None:
            return {"encoder_hidden_states": embeds}
        if half is not None:
            pooled, time_ids = pooled[half : half + 1], time_ids[half : half + 1]
        return {
            "encoder_hidden_states": embeds,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids},
        }


def micro_conditioning_ids(base: Size) -> list[int]:
    """original_size + crop (0, 0) + target_size, all the base stage's size for EVERY stage (reference)."""
    return [base[0], base[1], 0, 0, base[0], base[1]]


def _sdxl_conditioning(pipe, prompt: str, negative_prompt: str, guidance: float, base: Size) -> Conditioning:
    device, dtype = pipe.unet.device, pipe.unet.dtype
    uses_guidance = guidance > 1.0
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=prompt,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=uses_guidance,
        negative_prompt=negative_prompt,
    )
    time_ids = torch.tensor([micro_conditioning_ids(base)], dtype=dtype, device=device)
    if uses_guidance:
        embeds = torch.cat([negative, embeds])
        pooled = torch.cat([negative_pooled, pooled])
        time_ids = torch.cat([time_ids, time_ids])
    return Conditioning(embeds.to(dtype), pooled.to(dtype), time_ids, guidance)


def _text_only_conditioning(pipe, prompt: str, negative_prompt: str, guidance: float) -> Conditioning:
    device, dtype = pipe.unet.device, pipe.unet.dtype
    uses_guidance = guidance > 1.0
    embeds, negative = pipe.encode_prompt(
        prompt=prompt,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=uses_guidance,
        negative_prompt=negative_prompt,
    )
    if uses_guidance:
        embeds = torch.cat([negative, embeds])
    return Conditioning(embeds.to(dtype), None, None, guidance)


@torch.no_grad()
def encode_conditioning(
    pipe, prompt: str, negative_prompt: str, guidance: float, base: Size, frames: int | None = None
) -> Conditioning:
    """What the pipeline's UNet is conditioned on, chosen by its `addition_embed_type`; with `frames`, for
    a motion UNet rendering clips of that many frames."""
    warn_if_truncated(pipe, prompt, negative_prompt if guidance > 1.0 else None)  # one line, if too long
    addition = pipe.unet.config.addition_embed_type
    if addition == _SDXL_ADDITION:
        return replace(_sdxl_conditioning(pipe, prompt, negative_prompt, guidance, base), frames=frames)
    if addition == _NO_ADDITION:
        return replace(_text_only_conditioning(pipe, prompt, negative_prompt, guidance), frames=frames)
    raise NotImplementedError(
        f"a UNet with addition_embed_type {addition!r} is not supported; "
        f"supported: {_SDXL_ADDITION!r} (SDXL) and None (SD1.x, SD2.x)"
    )
