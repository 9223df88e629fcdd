"""The local branch of scale fusion (SPEC 4): every window attended on its own, outputs averaged per token.

Windows are cut out as slices and attended in batches. On the CPU their outputs are added back as slices
(parallel adds; measured fastest). Elsewhere every call is host time and a kernel launch, which a step of
small windows is bound by: the outputs go back in one deterministic indexed accumulation per batch of
windows, and batches are bounded by memory, not by a token count. Both add in window order from zero, so
on the CPU they give the same bits (CUDA's indexed kernel may keep an fp16 sum in fp32 until it stores it,
which only rounds less).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from freescale.tiling.windows import LocalWindows

# CPU: query rows (batch x windows x window tokens) of one batched call. Batching pays only for small
# windows, where per-call overhead dominates; a window of this size or larger fills a call on its own
# (measured: bench/window_batching.py).
WINDOW_TOKENS_PER_CALL = 1 << 13
# Other devices: bytes of the stacked q/k/v of one call, which bounds the memory batching adds.
WINDOW_BYTES_PER_CALL = 1 << 28


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


def window_slices(windows: LocalWindows) -> list[tuple[slice, slice]]:
    """(rows, columns) of each window in the padded grid."""
    wh, ww = windows.size
    return [(slice(r, r + wh), slice(c, c + ww)) for r, c in windows.corners]


def window_tokens(windows: LocalWindows) -> torch.Tensor:
    """(windows, wh * ww) int64, on the host: each window token's index in the flattened padded grid."""
    wh, ww = windows.size
    corners = torch.tensor(windows.corners, dtype=torch.int64).view(-1, 2)
    rows = corners[:, :1] + torch.arange(wh)
    cols = corners[:, 1:] + torch.arange(ww)
    width = windows.padded_grid[1]
    return (rows[:, :, None] * width + cols[:, None, :]).view(-1, wh * ww)


def windows_per_call(
    windows: LocalWindows, batch: int, channels: int, dtype: torch.dtype, device: torch.device
) -> int:
    """How many windows share one attention call: by query rows on the CPU, by memory elsewhere."""
    tokens = batch * windows.size[0] * windows.size[1]
    if device.type == "cpu":
        return max(1, WINDOW_TOKENS_PER_CALL // tokens)
    return max(1, WINDOW_BYTES_PER_CALL // (3 * tokens * channels * dtype.itemsize))


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without a host-device sync: copied from pinned memory, asynchronously."""
    if device.type == "cpu":
        return host
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)


def local_attention(
    qkv: torch.Tensor, windows: LocalWindows, heads: int, indexed: bool | None = None
) -> torch.Tensor:
    """Average of every window's attention output, per token of the padded grid: (B, Hp * Wp, C).

    `qkv` is (3, B, Hp * Wp, C): projections of the zero-padded grid. `indexed` (default: off the CPU) adds
    the outputs back with one indexed accumulation per batch of windows instead of one add per window.
    """
    _, batch, tokens, channels = qkv.shape
    device = qkv.device
    indexed = device.type != "cpu" if indexed is None else indexed
    width = windows.padded_grid[1]
    grid = qkv.view(3, batch, tokens // width, width, channels)
    wh, ww = windows.size
    flat = window_tokens(windows)
    # Windows per token: small integers, exact in any float dtype; counted on the host from the geometry.
    count = torch.bincount(flat.view(-1), minlength=tokens).clamp_(min=1).to(qkv.dtype)
    count = _to_device(count, device)
    total = torch.zeros(batch, tokens, channels, dtype=qkv.dtype, device=device)
    slices = window_slices(windows)
    chunk = windows_per_call(windows, batch, channels, qkv.dtype, device)
    starts = range(0, len(slices), chunk)
    if indexed and slices:
        # Rows of total.view(B * Hp * Wp, C) that each call's outputs (batch, window, token order) go to,
        # every call's run contiguous, moved in one copy.
        by_batch = torch.arange(batch)[:, None, None] * tokens
        targets = [(by_batch + flat[None, first : first + chunk]).view(-1) for first in starts]
        targets = _to_device(torch.cat(targets), device).split([t.numel() for t in targets])
    by_row = total.view(batch, tokens // width, width, channels)
    for call, first in enumerate(starts):
        part = slices[first : first + chunk]
        cut = torch.stack([grid[:, :, rows, cols] for rows, cols in part], dim=2)
        q, k, v = cut.view(3, batch * len(part), wh * ww, channels)
        out = attend(q, k, v, heads)
        if indexed:
            # Accumulates repeated rows in the order given (CUDA: by a stable sort), so window order.
            total.view(-1, channels).index_put_((targets[call],), out.reshape(-1, channels), accumulate=True)
            continue
        out = out.view(batch, len(part), wh, ww, channels)
        for j, (rows, cols) in enumerate(part):
            by_row[:, rows, cols].add_(out[:, j])
    return total / count[None, :, None]
