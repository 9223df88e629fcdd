"""Row bands of the tiled VAE decode/encode and of the bicubic resize against diffusers and F.interpolate."""

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from freescale.method.tiled_vae import bicubic_rows, decode_rows, encode_rows, sample_latents
from freescale.tiling.vae_tiles import (
    bicubic_source_rows,
    contributing_tiles,
    decode_axis_tiles,
    encode_axis_tiles,
    stitched_length,
    tile_starts,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # On this shared 2-core machine every 2-thread parallel region waits ~8 ms for a busy core, which
    # made these many small ops 10-50x slower than on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vae():
    from freescale.models.tiny_sdxl import build_tiny_pipeline

    model = build_tiny_pipeline(0).vae
    model.enable_tiling()  # only the diffusers references use this flag
    return model


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@contextmanager
def _count_calls(module: torch.nn.Module):
    calls = []
    handle = module.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


# ---- pure geometry ----


def test_tile_geometry_matches_diffusers_loops():
    assert tile_starts(40, 12) == [0, 12, 24, 36]
    tiles = decode_axis_tiles(40, 16, 128)
    assert [(t.in_start, t.in_stop, t.out_len, t.kept, t.blend) for t in tiles] == [
        (0, 16, 128, 96, 0),
        (12, 28, 128, 96, 32),
        (24, 40, 128, 96, 32),
        (36, 40, 32, 32, 32),
    ]
    for length in (17, 20, 40, 64):
        assert stitched_length(decode_axis_tiles(length, 16, 128)) == 8 * length
    for length in (136, 200, 256, 384, 512):
        assert stitched_length(encode_axis_tiles(length, 128, 16)) == length // 8
    # A 16-px last encoder tile gives 2 latent rows, so its blend extent shrinks to 2.
    assert encode_axis_tiles(400, 128, 16)[-1].blend == 2
    tiles = decode_axis_tiles(64, 16, 128)
    assert contributing_tiles(tiles, (128, 130)) == (1, 2)  # past tile 1's blend zone
    assert contributing_tiles(tiles, (96, 97)) == (0, 2)  # first blended row of tile 1
    assert contributing_tiles(tiles, (0, 512)) == (0, 6)


def test_bicubic_source_rows_cover_every_tap():
    for in_len, out_len in [(128, 256), (256, 384), (200, 512), (37, 100)]:
        for rows in [(0, 1), (0, out_len), (out_len - 1, out_len), (out_len // 3, out_len // 2)]:
            s0, s1 = bicubic_source_rows(rows, in_len, out_len)
            x = _randn(1, 1, in_len, 3, seed=in_len)
            ref = F.interpolate(x, size=(out_len, 3), mode="bicubic", align_corners=False)
            y = x.clone()
            y[..., :s0, :] = 1e3  # rows outside [s0, s1) must not matter
            y[..., s1:, :] = -1e3
            got = F.interpolate(y, size=(out_len, 3), mode="bicubic", align_corners=False)
            assert torch.equal(got[..., rows[0] : rows[1], :], ref[..., rows[0] : rows[1], :])
    assert bicubic_source_rows((0, 1), 128, 256) == (0, 2)
    assert bicubic_source_rows((100, 104), 128, 256) == (48, 54)


class _FakeVAE:
    """Cheap stand-in with diffusers' own tiling methods: its "decoder" and "encoder" depend on the whole
    tile (through its mean), so a wrong tile choice or a missed blend changes the result."""

    _decode = AutoencoderKL._decode
    _encode = AutoencoderKL._encode
    tiled_decode = AutoencoderKL.tiled_decode
    _tiled_encode = AutoencoderKL._tiled_encode
    blend_v = AutoencoderKL.blend_v
    blend_h = AutoencoderKL.blend_h

    def __init__(self) -> None:
        self.config = SimpleNamespace(use_post_quant_conv=False, use_quant_conv=False)
        self.post_quant_conv = self.quant_conv = None
        self.use_tiling = True
        self.tile_sample_min_size, self.tile_latent_min_size, self.tile_overlap_factor = 64, 8, 0.25
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        up = z[:, :3].repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
        return torch.sin(up * 3 + z.mean())

    def encoder(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 8)
        return torch.cat([pooled + x.std(), pooled * x.mean()], dim=1)


def test_tile_choice_on_many_shapes_with_a_fake_vae():
    fake = _FakeVAE()
    for h, w in [(9, 9), (7, 20), (13, 13), (17, 5), (25, 11), (31, 9), (40, 16)]:
        z = _randn(1, 3, h, w, seed=h * w)
        ref = fake._decode(z).sample
        for r in range(8 * h):  # every single row, and every range starting at a tile boundary
            assert torch.equal(decode_rows(fake, z, (r, r + 1)), ref[..., r : r + 1, :]), (h, w, r)
            if r % 48 == 0:
                assert torch.equal(decode_rows(fake, z, (r, 8 * h)), ref[..., r:, :]), (h, w, r)
        x = _randn(1, 3, 8 * h, 8 * w, seed=h + w)
        moments = fake._encode(x)
        for r in range(h):
            mean, logvar = encode_rows(fake, lambda y0, y1, x=x: x[..., y0:y1, :], (8 * h, 8 * w), (r, h))
            assert torch.equal(mean, moments[:, :3, r:]), (h, w, r)
            assert torch.equal(logvar, moments[:, 3:, r:].clamp(-30, 20)), (h, w, r)


# ---- bicubic rows ----


@pytest.mark.parametrize(
    ("in_size", "out_size"), [((128, 128), (256, 256)), ((256, 200), (384, 300)), ((200, 96), (512, 203))]
)
def test_bicubic_rows_match_interpolate_bitwise(in_size, out_size):
    image = _randn(2, 3, *in_size, seed=1)
    ref = F.interpolate(image, size=out_size, mode="bicubic", align_corners=False)
    out_h = out_size[0]
    for rows in [(0, out_h), (0, 1), (out_h - 1, out_h), (1, 3), (97, 171), (out_h // 2, out_h - 2)]:
        s0, s1 = bicubic_source_rows(rows, in_size[0], out_h)
        # Hand over a little more than needed, as a rank usually does.
        lo, hi = max(s0 - 3, 0), min(s1 + 2, in_size[0])
        got = bicubic_rows(image[..., lo:hi, :], lo, in_size, out_size, rows)
        assert torch.equal(got, ref[..., rows[0] : rows[1], :]), rows


def test_bicubic_rows_rejects_short_source():
    image = _randn(1, 3, 128, 128, seed=2)
    with pytest.raises(ValueError):
        bicubic_rows(image[..., 10:40, :], 10, (128, 128), (256, 256), (0, 60))


# ---- decode ----


_DECODE_ROWS = {
    (16, 16): [(0, 128), (5, 6)],  # not tiled: one plain decode
    (32, 32): [(0, 256), (95, 97), (255, 256)],
    (48, 40): [(0, 1), (90, 130), (300, 384)],  # from tile 1's blend zone; into the short last tile
    (64, 64): [(96, 97), (200, 330), (505, 512)],  # tile 1's first blended row; rows blended from 4 into 5
}


@pytest.mark.parametrize("shape", list(_DECODE_ROWS))
def test_decode_rows_match_diffusers_bitwise(vae, shape):
    z = _randn(1, 4, *shape, seed=3)
    with torch.no_grad():
        ref = vae.decode(z).sample
    for rows in _DECODE_ROWS[shape]:
        assert torch.equal(decode_rows(vae, z, rows), ref[..., rows[0] : rows[1], :]), rows


def test_decode_rows_casts_half_latents(vae):
    z = _randn(1, 4, 16, 16, seed=4).half()
    with torch.no_grad():
        ref = vae.decode(z.float()).sample
    got = decode_rows(vae, z, (3, 70))
    assert got.dtype == torch.float32 and torch.equal(got, ref[..., 3:70, :])


def test_decode_rows_runs_only_the_needed_tiles(vae):
    z = _randn(1, 4, 64, 64, seed=5)
    with _count_calls(vae.decoder) as calls:
        decode_rows(vae, z, (130, 140))  # inside tile row 1, past its blend zone
    assert len(calls) == 6  # one tile row of 6 tiles, out of 6 x 6


# ---- encode ----


_ENCODE_ROWS = {
    (128, 128): [(0, 16), (7, 9)],  # not tiled: one plain encode
    (256, 256): [(0, 32), (11, 13), (31, 32)],
    (384, 320): [(0, 1), (12, 13), (20, 41), (44, 48)],  # (12, 13): first blended row of tile row 1
    (512, 512): [(12, 16), (35, 50)],
    (512, 200): [(0, 64)],  # the last tile column is 8 px, 1 latent wide
}


@pytest.mark.parametrize("size", list(_ENCODE_ROWS))
def test_encode_rows_match_diffusers_bitwise(vae, size):
    image = _randn(1, 3, *size, seed=6)
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
    asked = []

    def image_rows(y0: int, y1: int) -> torch.Tensor:
        asked.append((y0, y1))
        return image[..., y0:y1, :]

    for rows in _ENCODE_ROWS[size]:
        asked.clear()
        mean, logvar = encode_rows(vae, image_rows, size, rows)
        assert len(asked) == 1
        assert torch.equal(mean, dist.mean[..., rows[0] : rows[1], :]), rows
        assert torch.equal(logvar, dist.logvar[..., rows[0] : rows[1], :]), rows


def test_encode_rows_runs_only_the_needed_tiles(vae):
    image = _randn(1, 3, 512, 512, seed=7)
    with _count_calls(vae.encoder) as calls:
        encode_rows(vae, lambda y0, y1: image[..., y0:y1, :], (512, 512), (28, 30))
    assert len(calls) == 6  # tile row 2 only (latent rows 24..35, past its blend zone), out of 6 x 6


def test_sample_latents_matches_diagonal_gaussian(vae):
    image = _randn(1, 3, 128, 128, seed=8)
    with torch.no_grad():
        dist = vae.encode(image).latent_dist
    ref = dist.sample(generator=torch.Generator().manual_seed(9)) * 0.13025
    noise = _randn(*dist.mean.shape, seed=9)
    assert torch.equal(sample_latents(dist.mean, dist.logvar, noise, 0.13025), ref)


# ---- the whole stage transition, band by band ----


def test_banded_transition_equals_full_diffusers_path(vae):
    sf = vae.config.scaling_factor
    prev = _randn(1, 4, 32, 24, seed=10)  # a 256x192 image, upscaled 1.5x to 384x288 (48x36 latents)
    in_size, out_size = (256, 192), (384, 288)
    noise = _randn(1, 4, 48, 36, seed=11)
    with torch.no_grad():
        image = vae.decode(prev / sf).sample
        resized = F.interpolate(image, size=out_size, mode="bicubic", align_corners=False)
        dist = vae.encode(resized).latent_dist
    ref = (dist.mean + dist.std * noise) * sf

    def image_rows(y0: int, y1: int) -> torch.Tensor:
        s0, s1 = bicubic_source_rows((y0, y1), in_size[0], out_size[0])
        source = decode_rows(vae, prev / sf, (s0, s1))
        return bicubic_rows(source, s0, in_size, out_size, (y0, y1))

    bands = []
    with _count_calls(vae.decoder) as decoded:
        mean, logvar = encode_rows(vae, image_rows, out_size, (0, 12))
    # Latent rows 0..12 are image rows 0..128, which read source rows 0..87: decoder tile row 0 only.
    assert len(decoded) == 2  # of 3 x 2
    bands.append(sample_latents(mean, logvar, noise[..., :12, :], sf))
    for band in [(12, 24), (24, 36), (36, 48)]:
        mean, logvar = encode_rows(vae, image_rows, out_size, band)
        bands.append(sample_latents(mean, logvar, noise[..., band[0] : band[1], :], sf))
    assert torch.equal(torch.cat(bands, dim=2), ref)
