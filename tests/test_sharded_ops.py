"""Each sharded operator on 2-4 gloo ranks equals the unsharded operator to 1e-5 relative (fp32)."""

import pytest
import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from freescale.cluster.sharding.band_ops import BandConv2d, BandGroupNorm
from freescale.cluster.sharding.local_ranks import max_relative_error, run_ranks
from freescale.cluster.sharding.shard_context import ShardContext
from freescale.method.freeu import band_fourier_filter, fourier_filter
from freescale.method.scale_attention import FusionStep, ScaleFusionProcessor

# A 44 x 20 latent: 11 four-row units, so 3 ranks hold 16/16/12 rows (4/4/3 at the /4 level) and
# 4 ranks hold 12/12/12/8: odd and unequal bands at every level.
LATENT = (44, 20)


def _context(group) -> ShardContext:
    context = ShardContext(group=group)
    context.set_stage(LATENT)
    return context


def _band(full: torch.Tensor, context: ShardContext, factor: int, dim: int) -> torch.Tensor:
    a, b = context.bands_at(factor)[context.group.rank]
    return full.narrow(dim, a, b - a)


def conv_cases(group):
    context = _context(group)
    errors = []
    # (kernel, stride, dilation, level): dilation 2 and 3, stride 2, a 1x1, the coarsest level.
    cases = [(3, 1, 1, 1), (3, 1, 2, 2), (3, 1, 3, 1), (3, 2, 1, 1), (3, 2, 2, 2), (3, 2, 3, 1), (1, 1, 1, 4),
             (3, 1, 1, 4)]  # fmt: skip
    for kernel, stride, dilation, factor in cases:
        torch.manual_seed(kernel * 100 + stride * 10 + dilation + factor)
        conv = nn.Conv2d(6, 5, kernel, stride=stride, padding=dilation * (kernel // 2), dilation=dilation)
        full = torch.randn(2, 6, *context.grid_at(factor))
        expected = _band(conv(full), context, factor * stride, dim=2)
        got = BandConv2d(conv, context)(_band(full, context, factor, dim=2))
        errors.append((got.shape == expected.shape, max_relative_error(got, expected)))
    return errors


def norm_cases(group):
    context = _context(group)
    torch.manual_seed(1)
    norm = nn.GroupNorm(4, 8, eps=1e-5)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    errors = []
    for factor in (1, 2, 4):
        full = torch.randn(2, 8, *context.grid_at(factor)) * 3 + 5  # an offset mean tests the variance
        expected = _band(norm(full), context, factor, dim=2)
        errors.append(
            max_relative_error(BandGroupNorm(norm, context)(_band(full, context, factor, 2)), expected)
        )
    return errors


def freeu_cases(group):
    context = _context(group)
    torch.manual_seed(2)
    errors = []
    for factor in (1, 2, 4):
        full = torch.randn(2, 3, *context.grid_at(factor))
        expected = _band(fourier_filter(full, 0.6), context, factor, dim=2)
        errors.append(
            max_relative_error(band_fourier_filter(_band(full, context, factor, 2), 0.6, context), expected)
        )
    return errors


def attention_cases(group):
    from freescale.cluster.sharding.shard_group import ShardGroup

    errors = []
    # (n_h, n_w), fast mode, level, jitter key: windows cross band edges at every level.
    cases = [((2, 2), False, 1, 5), ((2, 2), True, 1, 5), ((3, 3), False, 2, 7), ((3, 2), True, 2, None),
             ((2, 1), False, 4, 3)]  # fmt: skip
    for counts, fast_mode, factor, jitter in cases:
        torch.manual_seed(3)
        attn = Attention(query_dim=16, heads=2, dim_head=8, out_bias=True).eval()
        sharded, single = _context(group), _context(ShardGroup.single())
        h, w = sharded.grid_at(factor)
        full = torch.randn(2, h * w, 16)
        outputs = []
        for context, x in [(single, full), (sharded, None)]:
            step = FusionStep(scale_counts=counts, shard=context, fast_mode=fast_mode, jitter_seed=jitter)
            if x is None:
                a, b = context.bands_at(factor)[context.group.rank]
                x = full[:, a * w : b * w]
            outputs.append(ScaleFusionProcessor(step, layer=2)(attn, x))
        a, b = sharded.bands_at(factor)[sharded.group.rank]
        errors.append(max_relative_error(outputs[1], outputs[0][:, a * w : b * w]))
    return errors


def all_cases(group):
    return {"conv": conv_cases(group), "norm": norm_cases(group), "freeu": freeu_cases(group),
            "attention": attention_cases(group)}  # fmt: skip


@pytest.mark.parametrize("world", [2, 3, 4])
def test_sharded_operators_equal_unsharded(world):
    for rank, results in enumerate(run_ranks(world, all_cases)):
        assert all(same for same, _ in results["conv"]), rank
        assert max(error for _, error in results["conv"]) < 1e-5, (rank, results["conv"])
        assert max(results["norm"]) < 1e-5, (rank, results["norm"])
        assert max(results["freeu"]) < 1e-5, (rank, results["freeu"])
        assert max(results["attention"]) < 1e-5, (rank, results["attention"])


def test_halo_rules_by_hand():
    # The one source of the rows a band reads (BandConv2d and the traffic accounting both use it).
    from freescale.tiling.bands import blur_reads, clipped, conv_reads, zero_rows

    bands = [(0, 8), (8, 16)]
    assert conv_reads(bands, 1, 1, 1, 3) == [(-1, 9), (7, 17)]  # a 3x3: one row either side
    assert conv_reads(bands, 2, 1, 1, 3) == [(-1, 8), (7, 16)]  # stride 2: output rows 0-3 and 4-7
    assert conv_reads(bands, 1, 3, 3, 3) == [(-3, 11), (5, 19)]  # the restrained dilation at n = 3
    assert conv_reads(bands, 1, 0, 1, 1) == bands  # a 1x1 reads its own rows
    assert conv_reads([(0, 8), (8, 8)], 1, 1, 1, 3)[1] == (8, 8)  # an empty band reads nothing
    assert clipped(conv_reads(bands, 1, 3, 3, 3), 16) == [(0, 11), (5, 16)]
    assert [zero_rows(r, 16) for r in conv_reads(bands, 1, 3, 3, 3)] == [(3, 0), (0, 3)]
    assert blur_reads(bands, 5) == [(-2, 10), (6, 18)] and blur_reads(bands, 1) == bands


def gathered_and_fetched(group):
    """all_gather_rows on equal bands along dim 0 (received in place), unequal ones along dims 0 and 2, and
    fetch_rows with zero rows around the fetched ones, each against slicing the whole tensor."""
    full = torch.arange(2 * 12 * 3, dtype=torch.float32).reshape(12, 2, 3)
    checks = []
    for bands, dim in (([(0, 6), (6, 12)], 0), ([(0, 8), (8, 12)], 0), ([(0, 2), (2, 3)], 2)):
        a, b = bands[group.rank]
        local = full.narrow(dim, a, b - a).contiguous()
        whole = full.narrow(dim, 0, bands[-1][1])
        checks.append(torch.equal(group.all_gather_rows(local, bands, dim), whole))
    bands, needs = [(0, 6), (6, 12)], [(0, 8), (4, 12)]
    a, b = bands[group.rank]
    zeros = [(2, 0), (0, 1)][group.rank]
    fetched = group.fetch_rows(full[a:b], bands, needs, dim=0, zeros=zeros)
    lo, hi = needs[group.rank]
    expected = torch.cat([torch.zeros(zeros[0], 2, 3), full[lo:hi], torch.zeros(zeros[1], 2, 3)])
    checks.append(torch.equal(fetched, expected))
    return checks


def test_rows_gathered_in_place_or_joined_equal_the_whole_tensor():
    for checks in run_ranks(2, gathered_and_fetched):
        assert checks == [True] * 4


def staging_devices(group):
    """Where this gloo group sends a host tensor and a device tensor from (meta stands in for a GPU)."""
    return group.sendable_device(torch.zeros(1)), group.sendable_device(torch.empty(1, device="meta"))


def test_a_gloo_group_sends_device_tensors_through_the_host():
    # gloo moves only host tensors point to point: several ranks on one GPU (bench/sharded_render.py) stage
    # through host memory; a host tensor goes as it is.
    for devices in run_ranks(2, staging_devices):
        assert devices == (torch.device("cpu"), torch.device("cpu"))
