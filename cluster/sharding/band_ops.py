"""Sharded Conv2d and GroupNorm: tiny wrappers around the originals that work on one row band.

A conv borrows the halo rows its kernel reads from the ranks that hold them; GroupNorm sums its
statistics over all ranks in fp32. With one rank there is nothing to borrow or sum, and both are
the wrapped operator itself, so a sharded UNet stays usable as a plain one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from freescale.cluster.sharding.shard_context import ShardContext
from freescale.tiling.bands import band_align_rows, clipped, conv_reads, zero_rows


class BandConv2d(nn.Module):
    """Conv2d on a row band; reads `inner`'s dilation and padding at call time (the dilation switch)."""

    def __init__(self, inner: nn.Conv2d, context: ShardContext):
        super().__init__()
        self.inner = inner
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, ctx = self.inner, self.context
        if ctx.group.world == 1:
            return conv(x)  # the whole plane: no halo to borrow
        (kh, _), (sh, _), (ph, pw), (dh, _) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        factor = ctx.factor_for_rows(x.shape[-2])
        in_bands = ctx.bands_at(factor)
        full_rows = ctx.grid_at(factor)[0]
        wanted = conv_reads(in_bands, sh, ph, dh, kh)
        zeros = zero_rows(wanted[ctx.group.rank], full_rows)
        rows = ctx.group.fetch_rows(x, in_bands, clipped(wanted, full_rows), dim=-2, zeros=zeros)
        return F.conv2d(
            rows, conv.weight, conv.bias, (sh, conv.stride[1]), (0, pw), conv.dilation, conv.groups
        )


class BandGroupNorm(nn.Module):
    """GroupNorm whose mean and variance are over the whole stage. Each rank takes its band's mean and
    variance with GroupNorm's own kernel (var_mean is 3-19x slower on CPUs); two small fp32 all-reduces
    pool them (Chan's parallel formula: as accurate as a single-process two-pass variance), and one fused
    multiply-add normalises."""

    def __init__(self, inner: nn.GroupNorm, context: ShardContext):
        super().__init__()
        self.inner = inner
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gn, group = self.inner, self.context.group
        if group.world == 1:
            return gn(x)  # the whole plane: the statistics are already complete
        b, c = x.shape[:2]
        count = x.numel() // (b * gn.num_groups)  # elements of one sample's group in this band
        if count:
            band = x.float().contiguous()
            _, mean, rstd = torch.ops.aten.native_group_norm(
                band, None, None, b, c, band.numel() // (b * c), gn.num_groups, gn.eps
            )
            spread = rstd.reciprocal().square()  # the band's variance + eps
        else:  # an empty band adds nothing to the sums
            spread = mean = x.new_zeros(b, gn.num_groups, dtype=torch.float32)
        sums = torch.cat([(mean * count).reshape(-1), mean.new_tensor([float(count)])])
        group.all_reduce_sum(sums)
        total = sums[-1]
        pooled_mean = (sums[:-1] / total).view_as(mean)
        # Every band's eps weighs in by its count, so the pooled sum is the whole variance + eps.
        spread = group.all_reduce_sum((spread + (mean - pooled_mean) ** 2) * count) / total
        scale = torch.rsqrt(spread).repeat_interleave(c // gn.num_groups, dim=1)
        shift = -pooled_mean.repeat_interleave(c // gn.num_groups, dim=1) * scale
        if gn.affine:
            scale, shift = scale * gn.weight, shift * gn.weight + gn.bias
        shape = (b, c) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.view(shape), x, scale.view(shape)).to(x.dtype)


def shard_unet(unet: nn.Module, context: ShardContext) -> None:
    """Swap the UNet's spatial convs and GroupNorms for band versions, in place (once per model)."""
    context.align = band_align_rows(len(unet.down_blocks))
    for parent in list(unet.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and (child.kernel_size[0] > 1 or child.stride[0] > 1):
                setattr(parent, name, BandConv2d(child, context))
            elif isinstance(child, nn.GroupNorm):
                setattr(parent, name, BandGroupNorm(child, context))


@contextmanager
def unsharded(unet: nn.Module) -> Iterator[nn.Module]:
    """The UNet with its own convs and GroupNorms back in place for a while, e.g. to copy its weights
    under their own names into a motion UNet; the band versions return after."""
    swapped = []
    for parent in list(unet.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (BandConv2d, BandGroupNorm)):
                setattr(parent, name, child.inner)
                swapped.append((parent, name, child))
    try:
        yield unet
    finally:
        for parent, name, band_version in swapped:
            setattr(parent, name, band_version)


def shard_context_of(unet: nn.Module) -> ShardContext:
    """The UNet's band context, sharding the UNet the first time (a worker keeps it for every render)."""
    context = getattr(unet, "shard_context", None)
    if context is None:
        context = ShardContext()
        shard_unet(unet, context)
        unet.shard_context = context
    return context
