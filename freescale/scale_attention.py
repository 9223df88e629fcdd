"""Scale-fusion self-attention as a diffusers attention processor on attn1 (SPEC 4).

Local windows are attended in batches instead of one call per window, the q/k/v projections are
computed once on the zero-padded grid (they are per token, so windows share them), and the output
projection is applied after averaging (it is affine, so the average commutes with it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from freescale.gaussian_blur import gaussian_blur
from freescale.tiling.levels import token_grid
from freescale.tiling.windows import LocalWindows, jitter_key, local_windows

# Bounds the gathered q/k/v of one batched local-attention call, in (batch x window x token) rows.
WINDOW_TOKENS_PER_CALL = 1 << 18


@dataclass
class FusionStep:
    """What every scale-fusion layer needs to know about the current UNet call."""

    latent: tuple[int, int]
    scale_counts: tuple[int, int]
    fast_mode: bool = False
    jitter_seed: int | None = None
    stage: int = 0
    step: int = 0
    blur_channels: bool = True

    @property
    def n(self) -> int:
        return max(self.scale_counts)

    def windows(self, grid: tuple[int, int], layer: int) -> LocalWindows:
        key = None
        if self.jitter_seed is not None:
            key = jitter_key(self.jitter_seed, self.stage, self.step, layer)
        return local_windows(grid, self.n, key)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, heads, T, C // heads)."""
    b, t, c = x.shape
    return x.view(b, t, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain multi-head attention on (B, T, C) tensors, before the output projection."""
    out = F.scaled_dot_product_attention(_heads(q, heads), _heads(k, heads), _heads(v, heads))
    return _merge_heads(out).to(q.dtype)


def window_indices(windows: LocalWindows, device: torch.device) -> torch.Tensor:
    """(num_windows, window tokens) flat indices of each window's tokens in the padded grid."""
    wh, ww = windows.size
    width = windows.padded_grid[1]
    corners = torch.tensor(windows.corners, dtype=torch.long, device=device)
    rows = corners[:, :1, None] + torch.arange(wh, device=device)[None, :, None]
    cols = corners[:, 1:, None] + torch.arange(ww, device=device)[None, None, :]
    return (rows * width + cols).reshape(len(windows.corners), wh * ww)


def local_attention(qkv: torch.Tensor, windows: LocalWindows, heads: int) -> torch.Tensor:
    """Average of every window's attention output, per token of the padded grid: (B, Hp * Wp, C).

    `qkv` is (3, B, Hp * Wp, C): projections of the zero-padded grid.
    """
    _, batch, tokens, channels = qkv.shape
    index = window_indices(windows, qkv.device)
    num_windows, per_window = index.shape
    total = torch.zeros(batch, tokens, channels, dtype=qkv.dtype, device=qkv.device)
    chunk = max(1, WINDOW_TOKENS_PER_CALL // (batch * per_window))
    for first in range(0, num_windows, chunk):
        part = index[first : first + chunk]
        q, k, v = (t[:, part].reshape(-1, per_window, channels) for t in qkv)
        out = attend(q, k, v, heads).reshape(batch, -1, channels)
        total.index_add_(1, part.reshape(-1), out)
    count = torch.bincount(index.reshape(-1), minlength=tokens).clamp(min=1)
    return total / count.to(qkv.dtype)[None, :, None]


def strided_subgrid_attention(
    qkv: torch.Tensor, grid: tuple[int, int], counts: tuple[int, int], heads: int
) -> torch.Tensor:
    """Fast-mode global branch: each sub-grid x[a::n_h, b::n_w] attended on its own. qkv: (3, B, h, w, C)."""
    _, batch, h, w, channels = qkv.shape
    nh, nw = counts
    if h % nh == 0 and w % nw == 0:
        # Equal sub-grids: one batched call.
        grouped = qkv.view(3, batch, h // nh, nh, w // nw, nw, channels).permute(0, 1, 3, 5, 2, 4, 6)
        q, k, v = grouped.reshape(3, batch * nh * nw, (h // nh) * (w // nw), channels)
        out = attend(q, k, v, heads).view(batch, nh, nw, h // nh, w // nw, channels)
        return out.permute(0, 3, 1, 4, 2, 5).reshape(batch, h, w, channels)
    out = torch.empty(batch, h, w, channels, dtype=qkv.dtype, device=qkv.device)
    for a in range(nh):
        for b in range(nw):
            sub = qkv[:, :, a::nh, b::nw]
            sh, sw = sub.shape[2:4]
            q, k, v = sub.reshape(3, batch, sh * sw, channels)
            out[:, a::nh, b::nw] = attend(q, k, v, heads).view(batch, sh, sw, channels)
    return out


def _check_plain_self_attention(attn, encoder_hidden_states, attention_mask) -> None:
    unsupported = {
        "cross-attention input": encoder_hidden_states is not None,
        "an attention mask": attention_mask is not None,
        "spatial_norm": attn.spatial_norm is not None,
        "group_norm": attn.group_norm is not None,
        "norm_q/norm_k": attn.norm_q is not None or attn.norm_k is not None,
        "residual_connection": attn.residual_connection,
        "rescale_output_factor != 1": attn.rescale_output_factor != 1.0,
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise NotImplementedError(f"scale fusion supports plain self-attention only; this layer has {found}")


class ScaleFusionProcessor:
    """attn1 processor: out = G(local) + global - G(global), with G the Gaussian filter."""

    def __init__(self, step: FusionStep, layer: int):
        self.step = step
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        _check_plain_self_attention(attn, encoder_hidden_states, attention_mask)
        batch, tokens, channels = hidden_states.shape
        grid = token_grid(self.step.latent, tokens)
        windows = self.step.windows(grid, self.layer)
        (h, w), (ph, pw) = grid, windows.pad

        padded = F.pad(hidden_states.view(batch, h, w, channels), (0, 0, pw, pw, ph, ph))
        padded = padded.reshape(batch, -1, channels)
        qkv = torch.stack([attn.to_q(padded), attn.to_k(padded), attn.to_v(padded)])
        inner = qkv.shape[-1]
        hp, wp = windows.padded_grid

        local = local_attention(qkv, windows, attn.heads).view(batch, hp, wp, inner)
        local = local[:, ph : ph + h, pw : pw + w]
        grid_qkv = qkv.view(3, batch, hp, wp, inner)[:, :, ph : ph + h, pw : pw + w]
        if self.step.fast_mode:
            glob = strided_subgrid_attention(grid_qkv.contiguous(), grid, self.step.scale_counts, attn.heads)
        else:
            q, k, v = grid_qkv.reshape(3, batch, h * w, inner)
            glob = attend(q, k, v, attn.heads).view(batch, h, w, inner)

        local = attn.to_out[1](attn.to_out[0](local))
        glob = attn.to_out[1](attn.to_out[0](glob))
        # G is linear: G(local) + global - G(global) = global + G(local - global), one blur not two.
        kernel = 2 * self.step.n - 1
        fused = glob + gaussian_blur(local - glob, kernel, channels=self.step.blur_channels)
        return fused.reshape(batch, tokens, -1)
