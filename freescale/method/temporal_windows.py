"""Temporal context windows on a motion UNet (FreeNoise): each motion-module transformer block attends over
windows of frames and averages them per frame; everything else in the UNet sees every frame.

`temporal_windows_applied` wraps every transformer block of every `AnimateDiffTransformer3D` (chosen by
type) for the duration of a render and puts the originals back on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from freescale.method.unet_topology import UnsupportedUNetError
from freescale.tiling.temporal_windows import temporal_windows, window_weights, written_frames


@dataclass(frozen=True)
class WindowSettings:
    window: int  # frames per window
    stride: int  # frames between window starts
    weights: str  # 'pyramid' or 'flat'


class WindowedTemporalBlock(nn.Module):
    """A motion module's BasicTransformerBlock whose two temporal attentions (with their norms, positional
    embedding and residuals) run window by window; the windows' results are averaged per frame with the
    window weights, then the feed-forward runs on every frame. A clip within one window is the block as is."""

    def __init__(self, inner: BasicTransformerBlock, settings: WindowSettings):
        super().__init__()
        self.inner = inner
        self.settings = settings

    def _attend(self, x: torch.Tensor, attention_mask, cross_attention_kwargs) -> torch.Tensor:
        block = self.inner
        normed = block.norm1(x)
        if block.pos_embed is not None:
            normed = block.pos_embed(normed)  # positions count from the window's first frame
        x = block.attn1(normed, attention_mask=attention_mask, **cross_attention_kwargs) + x
        if block.attn2 is not None:
            normed = block.norm2(x)
            if block.pos_embed is not None:
                normed = block.pos_embed(normed)
            x = block.attn2(normed, **cross_attention_kwargs) + x  # a motion module's second self-attention
        return x

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cross_attention_kwargs: dict | None = None,
        **kwargs,
    ) -> torch.Tensor:
        s = self.settings
        frames = hidden_states.shape[1]  # (batch x rows x cols, frames, channels)
        if frames <= s.window:
            return self.inner(
                hidden_states,
                attention_mask=attention_mask,
                encoder_hidden_states=encoder_hidden_states,
                cross_attention_kwargs=cross_attention_kwargs,
                **kwargs,
            )
        if encoder_hidden_states is not None:
            raise ValueError("a windowed motion module attends over frames only; it takes no encoder states")
        extra = dict(cross_attention_kwargs or {})
        weights = torch.tensor(window_weights(s.window, s.weights), device=hidden_states.device)
        total = torch.zeros_like(hidden_states)
        count = torch.zeros(1, frames, 1, device=hidden_states.device)
        windows = temporal_windows(frames, s.window, s.stride)
        written = written_frames(frames, s.window, s.stride)
        for (start, end), (first, last) in zip(windows, written, strict=True):
            attended = self._attend(hidden_states[:, start:end], attention_mask, extra)
            weight = weights[first - start : last - start].view(1, -1, 1)
            total[:, first:last] += attended[:, first - start : last - start] * weight.to(total.dtype)
            count[:, first:last] += weight
        averaged = (total / count).to(hidden_states.dtype)
        return self.inner.ff(self.inner.norm3(averaged)) + averaged


def _motion_blocks(unet: nn.Module) -> list[tuple[nn.ModuleList, int, BasicTransformerBlock]]:
    found = []
    for name, module in unet.named_modules():
        if not isinstance(module, AnimateDiffTransformer3D):
            continue
        for index, block in enumerate(module.transformer_blocks):
            if not isinstance(block, BasicTransformerBlock) or block.norm_type != "layer_norm":
                kind = getattr(block, "norm_type", type(block).__name__)
                raise UnsupportedUNetError(
                    f"{name}.transformer_blocks.{index} ({kind}) is not a layer-norm BasicTransformerBlock; "
                    "temporal windows support AnimateDiff motion modules"
                )
            if block.only_cross_attention or block._chunk_size is not None:
                raise UnsupportedUNetError(f"{name}.transformer_blocks.{index}: cross-only or chunked blocks "
                                           "are not supported by temporal windows")  # fmt: skip
            found.append((module.transformer_blocks, index, block))
    if not found:
        raise UnsupportedUNetError(
            f"{type(unet).__name__} has no AnimateDiffTransformer3D motion modules to window"
        )
    return found


@contextmanager
def temporal_windows_applied(unet: nn.Module, settings: WindowSettings) -> Iterator[None]:
    """Within the block the motion UNet's motion modules attend over `settings`' windows."""
    blocks = _motion_blocks(unet)
    for parent, index, block in blocks:
        parent[index] = WindowedTemporalBlock(block, settings)
    try:
        yield
    finally:
        for parent, index, block in blocks:
            parent[index] = block
