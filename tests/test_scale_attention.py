"""Scale-fusion attention against the reference formula computed window by window (SPEC 4)."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from freescale.cluster.sharding.shard_context import ShardContext
from freescale.method.gaussian_blur import gaussian_weights
from freescale.method.scale_attention import FusionStep, ScaleFusionProcessor
from freescale.tiling.windows import local_windows


def _attention(channels=16, heads=2, seed=0):
    torch.manual_seed(seed)
    attn = Attention(query_dim=channels, heads=heads, dim_head=channels // heads, out_bias=True)
    with torch.no_grad():  # biases on q/k/v too, so padded zero tokens are not trivially zero
        for lin in (attn.to_q, attn.to_k, attn.to_v):
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


def test_window_chunking_does_not_change_the_result(monkeypatch):
    attn = _attention()
    grid = (24, 24)
    x = torch.randn(2, 576, 16, dtype=torch.float64)
    step = _step(grid, (3, 3), jitter_seed=9)
    whole = ScaleFusionProcessor(step, 0)(attn, x)
    monkeypatch.setattr("freescale.method.scale_attention.WINDOW_TOKENS_PER_CALL", 100)
    chunked = ScaleFusionProcessor(step, 0)(attn, x)
    assert torch.allclose(whole, chunked, rtol=1e-12, atol=1e-12)


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
