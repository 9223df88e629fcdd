"""Text conditioning of an SDXL render: prompt embeddings, pooled embeddings and micro-conditioning ids."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from freescale.tiling.stages import Size


@dataclass(frozen=True)
class Conditioning:
    """UNet inputs that stay fixed for the whole render; batch is [negative, positive] under guidance."""

    prompt_embeds: torch.Tensor
    pooled_embeds: torch.Tensor
    time_ids: torch.Tensor
    guidance: float

    @property
    def uses_guidance(self) -> bool:
        return self.guidance > 1.0

    def unet_kwargs(self, half: int | None = None) -> dict:
        """The whole batch, or with `half` only the negative (0) or positive (1) row of it."""
        embeds, pooled, time_ids = self.prompt_embeds, self.pooled_embeds, self.time_ids
        if half is not None:
            embeds, pooled, time_ids = (
                embeds[half : half + 1],
                pooled[half : half + 1],
                time_ids[half : half + 1],
            )
        return {
            "encoder_hidden_states": embeds,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids},
        }


def micro_conditioning_ids(base: Size) -> list[int]:
    """original_size + crop (0, 0) + target_size, all the base stage's size for EVERY stage (reference)."""
    return [base[0], base[1], 0, 0, base[0], base[1]]


@torch.no_grad()
def encode_conditioning(pipe, prompt: str, negative_prompt: str, guidance: float, base: Size) -> Conditioning:
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
