"""Scale-fusion attention against the reference formula computed window by window (SPEC 4)."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from freescale.cluster.sharding.shard_context import ShardContext
from freescale.method.gaussian_blur import gaussian_weights
from freescale.method.scale_attention import FusionStep, ScaleFusionProcessor, strided_subgrid_attention
from freescale.method.window_attention import attend, local_attention
from freescale.tiling.windows import local_windows


def _attention(channels=16, heads=2, seed=0, qkv_bias=True):
    torch.manual_seed(seed)
    attn = Attention(query_dim=channels, heads=heads, dim_head=channels // heads, out_bias=True)
    with torch.no_grad():  # biases on q/k/v too, so padded zero tokens are not trivially zero
        for lin in (attn.to_q, attn.to_k, attn.to_v) if qkv_bias else ():
            lin.bias = torch.nn.Parameter(torch.randn(lin.out_features) * 0.1)
    attn.set_processor(AttnProcessor2_0())
    return attn.double().eval()


def _step(grid, counts, **kwargs):
    shard = ShardContext()
    shard.set_stage(grid)
    return FusionStep(scale_counts=counts, shard=shard, **kwargs)


def _blur3d(x, kernel_size):
    g = torch.tensor(gaussian_weights(kernel_size), dtype=x.dtype)
    kernel = (g[:, None, None] * g[None, :, None] * g[None, None, :])[None, None]
    kernel = kernel.repeat(x.shape[0], 1, 1, 1, 1)
    return F.conv3d(x[None], kernel, padding=kernel_size // 2, groups=x.shape[0])[0]


def reference_scale_attention(attn, x, grid, counts, windows, fast_mode):
    """The reference's loop: attn1 per window on the padded grid, average, crop, then fuse."""
    b, _, c = x.shape
    h, w = grid
    ph, pw = windows.pad
    wh, ww = windows.size
    padded = F.pad(x.view(b, h, w, c), (0, 0, pw, pw, ph, ph))
    value = torch.zeros_like(padded)
    count = torch.zeros_like(padded)
    for top, left in windows.corners:
        part = padded[:, top : top + wh, left : left + ww].reshape(b, wh * ww, c)
        value[:, top : top + wh, left : left + ww] += attn(part).view(b, wh, ww, c)
        count[:, top : top + wh, left : left + ww] += 1
    value, count = value[:, ph : ph + h, pw : pw + w], count[:, ph : ph + h, pw : pw + w]
    local = torch.where(count > 0, value / count, value)
    if fast_mode:
        nh, nw = counts
        glob = torch.zeros(b, h, w, c, dtype=x.dtype)
        grid_x = x.view(b, h, w, c)
        for i in range(nh):
            for j in range(nw):
                sub = grid_x[:, i::nh, j::nw]
                out = attn(sub.reshape(b, -1, c)).view(sub.shape)
                glob[:, i::nh, j::nw] = out
    else:
        glob = attn(x).view(b, h, w, c)
    k = 2 * max(counts) - 1
    return (_blur3d(local, k) + glob - _blur3d(glob, k)).reshape(b, h * w, c)


CASES = [
    # (grid, counts, jitter key): square, non-square, grid not divisible by n, big jitter reach
    ((16, 16), (2, 2), None),
    ((16, 16), (2, 2), 7),
    ((12, 24), (1, 2), 3),
    ((18, 18), (3, 3), 11),
    ((17, 13), (2, 1), 5),
    ((32, 32), (4, 4), 1),
]


@pytest.mark.parametrize("fast_mode", [False, True])
@pytest.mark.parametrize("grid, counts, key", CASES)
def test_batched_windows_equal_window_by_window(grid, counts, key, fast_mode):
    attn = _attention()
    x = torch.randn(2, grid[0] * grid[1], 16, dtype=torch.float64)
    step = _step(grid, counts, fast_mode=fast_mode, jitter_seed=key)
    processor = ScaleFusionProcessor(step, layer=3)
    windows = step.windows(grid, 3)
    expected = reference_scale_attention(attn, x, grid, counts, windows, fast_mode)
    got = processor(attn, x)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fast_mode", [False, True])
@pytest.mark.parametrize("grid, counts, key", [CASES[1], CASES[2], CASES[4]])  # windows reaching the padding
def test_projections_without_bias_are_padded_with_zeros(grid, counts, key, fast_mode):
    # SDXL's and SD1.5's attn1 have no q/k/v bias: the padding then holds zeros without calling the modules.
    attn = _attention(qkv_bias=False)
    assert attn.to_q.bias is None and attn.to_k.bias is None and attn.to_v.bias is None
    x = torch.randn(2, grid[0] * grid[1], 16, dtype=torch.float64)
    step = _step(grid, counts, fast_mode=fast_mode, jitter_seed=key)
    expected = reference_scale_attention(attn, x, grid, counts, step.windows(grid, 3), fast_mode)
    got = ScaleFusionProcessor(step, layer=3)(attn, x)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_window_chunking_does_not_change_the_result(monkeypatch):
    attn = _attention()
    grid = (24, 24)
    x = torch.randn(2, 576, 16, dtype=torch.float64)
    step = _step(grid, (3, 3), jitter_seed=9)
    whole = ScaleFusionProcessor(step, 0)(attn, x)
    monkeypatch.setattr("freescale.method.window_attention.WINDOW_TOKENS_PER_CALL", 100)
    chunked = ScaleFusionProcessor(step, 0)(attn, x)
    assert torch.allclose(whole, chunked, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    "grid, counts, key", [((18, 18), (3, 3), 11), ((17, 13), (2, 1), 5), ((32, 32), (4, 4), 1)]
)
def test_indexed_add_back_gives_the_slices_bits(grid, counts, key, dtype, monkeypatch):
    # Off the CPU the window outputs go back by one indexed accumulation per call; it must add in window
    # order from zero, as the per-window slice adds do, so that the two give the same bits. Calls of three
    # windows check that the order holds within a call and across calls.
    windows = local_windows(grid, max(counts), key)
    hp, wp = windows.padded_grid
    qkv = torch.randn(3, 2, hp * wp, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    calls_of_three = 3 * 2 * windows.size[0] * windows.size[1]
    monkeypatch.setattr("freescale.method.window_attention.WINDOW_TOKENS_PER_CALL", calls_of_three)
    sliced = local_attention(qkv, windows, heads=2, indexed=False)
    indexed = local_attention(qkv, windows, heads=2, indexed=True)
    assert torch.equal(sliced, indexed)


@pytest.mark.parametrize("first_row, rows", [(0, 12), (4, 8), (3, 6), (5, 6), (2, 7), (0, 24)])
def test_fast_mode_subgrids_in_one_call_give_each_subgrids_bits(first_row, rows):
    # A band of rows [first_row, first_row + rows) of a 24 x 12 grid at n = (3, 2): when every sub-grid has
    # the same shape they share one attention call (keys rolled to the band's first row class), which must
    # give, bit for bit, each sub-grid attended on its own (7 rows: the per-sub-grid loop itself).
    generator = torch.Generator().manual_seed(1)
    h, w, nh, nw = 24, 12, 3, 2
    kv = torch.randn(2, 2, h, w, 16, generator=generator)
    q = torch.randn(2, h, w, 16, generator=generator)[:, first_row : first_row + rows]
    got = strided_subgrid_attention(q, kv, first_row, (nh, nw), heads=2)
    expected = torch.empty_like(q)
    for r in range(nh):  # row slot r of the band holds sub-grid row class (first_row + r) % nh
        for b in range(nw):
            sub = q[:, r::nh, b::nw]
            k, v = (t[:, (first_row + r) % nh :: nh, b::nw].reshape(2, -1, 16) for t in kv)
            expected[:, r::nh, b::nw] = attend(sub.reshape(2, -1, 16), k, v, 2).view(sub.shape)
    assert torch.equal(got, expected)


def test_single_window_without_jitter_is_plain_attention():
    # n = 1: one window covering the grid, kernel 1: the fusion reduces to ordinary attention.
    attn = _attention()
    x = torch.randn(1, 64, 16, dtype=torch.float64)
    step = _step((8, 8), (1, 1), jitter_seed=4)
    assert local_windows((8, 8), 1, 99).corners == ((1, 1),)
    assert torch.allclose(ScaleFusionProcessor(step, 0)(attn, x), attn(x), atol=1e-12)


def test_unsupported_attention_is_refused():
    attn = _attention()
    step = _step((4, 4), (1, 1))
    with pytest.raises(NotImplementedError, match="cross-attention"):
        ScaleFusionProcessor(step, 0)(
            attn,
            torch.randn(1, 16, 16, dtype=torch.float64),
            encoder_hidden_states=torch.randn(1, 3, 16, dtype=torch.float64),
        )
