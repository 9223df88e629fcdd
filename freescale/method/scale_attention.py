"""Scale-fusion self-attention as a diffusers attention processor on attn1 (SPEC 4).

The q/k/v projections are computed once per token of the rows this rank reads and are shared by both
branches (the windows themselves: window_attention.py); the local branch's zero padding is laid around them
as what a zero token projects to. The output projection is applied after averaging (it is affine, so the
average commutes with it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from freescale.cluster.sharding.shard_context import ShardContext
from freescale.method.gaussian_blur import gaussian_blur
from freescale.method.window_attention import attend, local_attention
from freescale.tiling.bands import Band, blur_reads, clipped, zero_rows
from freescale.tiling.windows import (
    LocalWindows,
    blur_kernel_size,
    jitter_key,
    local_windows,
    windows_touching_rows,
)


@dataclass
class FusionStep:
    """What every scale-fusion layer needs to know about the current UNet call."""

    scale_counts: tuple[int, int]
    shard: ShardContext = field(default_factory=ShardContext)
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


def strided_subgrid_attention(
    q: torch.Tensor, kv: torch.Tensor, first_row: int, counts: tuple[int, int], heads: int
) -> torch.Tensor:
    """Fast-mode global branch: sub-grid x[a::n_h, b::n_w] attends only to itself.

    q: (B, rows, w, C) for grid rows [first_row, ...); kv: (2, B, h, w, C) for the whole grid.
    """
    batch, rows, w, channels = q.shape
    nh, nw = counts
    if rows and rows % nh == 0 and kv.shape[2] % nh == 0 and w % nw == 0:
        return _equal_subgrids_attention(q, kv, first_row, counts, heads)
    out = torch.empty_like(q)
    for a in range(nh):
        local_a = (a - first_row) % nh  # first of this rank's rows that lies in sub-grid row class a
        if local_a >= rows:
            continue
        k, v = kv[:, :, a::nh]
        for b in range(nw):
            q_sub = q[:, local_a::nh, b::nw]
            sh, sw = q_sub.shape[1:3]
            out[:, local_a::nh, b::nw] = attend(
                q_sub.reshape(batch, sh * sw, channels),
                k[:, :, b::nw].reshape(batch, -1, channels),
                v[:, :, b::nw].reshape(batch, -1, channels),
                heads,
            ).view(batch, sh, sw, channels)
    return out


def _equal_subgrids_attention(
    q: torch.Tensor, kv: torch.Tensor, first_row: int, counts: tuple[int, int], heads: int
) -> torch.Tensor:
    """strided_subgrid_attention when every sub-grid has the same shape: all of them in one batched call
    (one copy in and one out, instead of several per sub-grid: on a GPU each is a kernel launch)."""
    batch, rows, w, channels = q.shape
    nh, nw = counts
    # q's row slot r holds sub-grid row class (first_row + r) % nh; batch order (B, slot, column class).
    q_sub = q.unflatten(1, (rows // nh, nh)).unflatten(3, (w // nw, nw)).permute(0, 2, 4, 1, 3, 5)
    kv_sub = kv.unflatten(2, (kv.shape[2] // nh, nh)).unflatten(4, (w // nw, nw)).permute(0, 1, 3, 5, 2, 4, 6)
    if first_row % nh:
        kv_sub = torch.roll(kv_sub, -(first_row % nh), dims=2)
    k, v = kv_sub.reshape(2, batch * nh * nw, -1, channels)
    out = attend(q_sub.reshape(batch * nh * nw, -1, channels), k, v, heads)
    out = out.view(batch, nh, nw, rows // nh, w // nw, channels).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(batch, rows, w, channels)


def whole_grid_keys_values(shard: ShardContext, band_kv: torch.Tensor, bands: list[Band]) -> torch.Tensor:
    """Keys and values (2, B, h, w, C) of the whole grid from every rank's band (2, B, rows, w, C), gathered
    rows first, so that with equal bands each rank's rows land in place (no copy to assemble the grid), then
    viewed back: strided, not copied, since attention reads keys row by row. One rank: its band, as it is."""
    rows_first = shard.group.all_gather_rows(band_kv.permute(2, 3, 0, 1, 4), bands, dim=0)
    return rows_first.permute(2, 3, 0, 1, 4)


def zero_padded_projections(
    attn, projections: list[torch.Tensor], in_channels: int, rows_pad: tuple[int, int], columns_pad: int
) -> torch.Tensor:
    """(3, B, rows_pad[0] + R + rows_pad[1], w + 2 * columns_pad, C): the q/k/v projections (B, R, w, C) of
    real rows inside the local branch's zero padding, which holds what a zero token projects to (the
    padded zeros take part in the windows, SPEC 4): nothing but zeros for a Linear without bias, as SDXL's
    and SD1.5's attn1 are; otherwise the module's own output for a zero token, the bits a padded grid's
    projection gave."""
    batch, rows, w, channels = projections[0].shape
    above, below = rows_pad
    out = projections[0].new_zeros(3, batch, above + rows + below, w + 2 * columns_pad, channels)
    modules = (attn.to_q, attn.to_k, attn.to_v)
    for i, (module, projection) in enumerate(zip(modules, projections, strict=True)):
        if not (isinstance(module, nn.Linear) and module.bias is None):
            zero_token = module(projection.new_zeros(1, in_channels))
            out[i].copy_(zero_token.view(channels).expand_as(out[i]))
        out[i, :, above : above + rows, columns_pad : columns_pad + w] = projection
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
    """attn1 processor: out = G(local) + global - G(global), with G the Gaussian filter.

    Works on this rank's row band of the token grid: it borrows the rows its local windows and
    the blur reach into, and gathers keys/values of the whole grid for the global branch.
    """

    def __init__(self, step: FusionStep, layer: int):
        self.step = step
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        _check_plain_self_attention(attn, encoder_hidden_states, attention_mask)
        shard = self.step.shard
        batch, tokens, channels = hidden_states.shape
        factor = shard.factor_for_tokens(tokens)
        grid, bands = shard.grid_at(factor), shard.bands_at(factor)
        (h, w), (a, b) = grid, bands[shard.group.rank]
        x = hidden_states.view(batch, b - a, w, channels)
        windows = self.step.windows(grid, self.layer)

        # Local branch: the windows that touch this band, on the rows they cover.
        reach = [windows_touching_rows(windows, band) for band in bands]
        rows = shard.group.fetch_rows(x, bands, clipped([r.rows for r in reach], h), dim=1)
        mine = reach[shard.group.rank]
        top = mine.rows[0]  # the first padded row: a grid row, or above the grid
        first = max(top, 0)  # the first grid row fetched
        # Per token, so projected once on real rows only; both branches read these.
        projections = [attn.to_q(rows), attn.to_k(rows), attn.to_v(rows)]
        inner = projections[0].shape[-1]
        pw = windows.pad[1]
        padded = zero_padded_projections(attn, projections, channels, zero_rows(mine.rows, h), pw)
        local = local_attention(padded.view(3, batch, -1, inner), mine.windows, attn.heads)
        local = local.view(batch, -1, w + 2 * pw, inner)[:, a - top : b - top, pw : pw + w]

        # Global branch: this band's queries against keys/values of the whole grid.
        q = projections[0][:, a - first : b - first]
        kv = whole_grid_keys_values(shard, padded[1:, :, a - top : b - top, pw : pw + w], bands)
        if self.step.fast_mode:
            glob = strided_subgrid_attention(q, kv, a, self.step.scale_counts, attn.heads)
        else:
            # One rank: the projections hold the same keys/values unpadded, so they read flat with no copy.
            k, v = projections[1:] if len(bands) == 1 else kv
            flat = (t.reshape(batch, -1, inner) for t in (q, k, v))
            glob = attend(*flat, attn.heads).view(batch, b - a, w, inner)

        local = attn.to_out[1](attn.to_out[0](local))
        glob = attn.to_out[1](attn.to_out[0](glob))
        # G is linear: G(local) + global - G(global) = global + G(local - global), one blur not two.
        kernel = blur_kernel_size(self.step.n)
        # Borrowed rows beyond the band are real data; beyond the grid, the blur's own zero padding.
        needs = clipped(blur_reads(bands, kernel), h)
        diff = shard.group.fetch_rows(local - glob, bands, needs, dim=1)
        blurred = gaussian_blur(diff, kernel, channels=self.step.blur_channels)
        first = a - needs[shard.group.rank][0]
        fused = glob + blurred[:, first : first + (b - a)]
        return fused.reshape(batch, tokens, -1)
