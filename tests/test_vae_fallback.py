"""An fp16 VAE tile that overflows is redone in float32, alone, and named in one warning line; the rest of
the tiled decode/encode is exactly the plain fp16 result."""

import copy
import io

import pytest
import torch
from torch import nn

from freescale.method.tiled_vae import decode_row_strips, decode_rows, encode_rows
from freescale.method.vae_fallback import TileReport, fp32_copy, run_tile
from freescale.models.tiny_parts import tiny_vae
from freescale.progress import Progress

HUGE = 1e4  # fits float16, but conv_in (weights x8) takes it past 65504 in the tiles that hold it


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vaes():
    """(fp16 VAE, its exact float32 twin); tiles of 128 px / 16 latent rows, overlap 0.25."""
    torch.manual_seed(0)
    vae = tiny_vae(0.13).eval()
    with torch.no_grad():
        vae.decoder.conv_in.weight.mul_(8)
        vae.encoder.conv_in.weight.mul_(8)
    vae16 = vae.half()
    vae16.enable_tiling()  # only the diffusers references use this flag
    return vae16, copy.deepcopy(vae16).float()


class _RedoneWhereNotFinite(nn.Module):
    """The reference's tile: the fp16 parts, or where that is not finite the fp32 parts, cast back."""

    def __init__(self, parts16: list[nn.Module], parts32: list[nn.Module]):
        super().__init__()
        self.parts16, self.parts32 = nn.ModuleList(parts16), nn.ModuleList(parts32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for part in self.parts16:
            out = part(out)
        if torch.isfinite(out).all():
            return out
        out = x.float()
        for part in self.parts32:
            out = part(out)
        return out.half()


def _diffusers_with_redo(vae16, vae32):
    """diffusers' own tiled decode/encode loops on a VAE whose tiles are `_RedoneWhereNotFinite`."""
    ref = copy.deepcopy(vae16)
    ref.decoder = _RedoneWhereNotFinite([vae16.post_quant_conv, vae16.decoder],
                                        [vae32.post_quant_conv, vae32.decoder])  # fmt: skip
    ref.encoder = _RedoneWhereNotFinite([vae16.encoder, vae16.quant_conv], [vae32.encoder, vae32.quant_conv])
    ref.post_quant_conv = ref.quant_conv = nn.Identity()
    return ref


def _latents() -> torch.Tensor:
    """(1, 4, 24, 24): 2 x 2 decode tiles (latent starts 0 and 12); a huge patch only tiles (0, 0) and
    (1, 1) read."""
    z = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(1))
    z[..., 2:6, 2:6] = HUGE
    z[..., 18:22, 18:22] = -HUGE
    return z.half()


def test_overflowing_decode_tiles_alone_are_redone_in_float32(vaes):
    vae16, vae32 = vaes
    z = _latents()
    with torch.no_grad():
        plain = vae16.decode(z).sample  # diffusers' tiled fp16 decode, with its black (NaN) tiles
        expected = _diffusers_with_redo(vae16, vae32).decode(z).sample
    lines = []
    got = decode_rows(vae16, z, (0, 192), TileReport(stage=1, warn=lines.append))

    assert lines == [
        "freescale: warning: VAE decode tile (rows 0-128, cols 0-128) of stage 2 overflowed in float16; "
        "redone in float32",
        "freescale: warning: VAE decode tile (rows 96-192, cols 96-192) of stage 2 overflowed in float16; "
        "redone in float32",
    ]
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    assert torch.equal(got, expected)
    # The fp16 decode did overflow there, and only there: tile (0, 1) and (1, 0)'s own rows are untouched.
    assert not torch.isfinite(plain[..., :128, :128]).all()
    assert torch.equal(got[..., :96, 128:], plain[..., :96, 128:])
    assert torch.equal(got[..., 128:, :96], plain[..., 128:, :96])
    # Tile (0, 0)'s unblended rows are its float32 decode, cast back.
    with torch.no_grad():
        tile32 = vae32.decoder(vae32.post_quant_conv(z[..., :16, :16].float()))
    assert torch.equal(got[..., :96, :96], tile32[..., :96, :96].half())


def test_strips_redo_only_the_tiles_they_decode(vaes):
    vae16, vae32 = vaes
    z = _latents()
    lines = []
    strips = list(decode_row_strips(vae16, z, (150, 192), TileReport(warn=lines.append)))
    with torch.no_grad():
        expected = _diffusers_with_redo(vae16, vae32).decode(z).sample
    assert torch.equal(torch.cat(strips, dim=2), expected[..., 150:192, :])
    assert lines == [
        "freescale: warning: VAE decode tile (rows 96-192, cols 96-192) of the image overflowed in float16; "
        "redone in float32"
    ]


def test_overflowing_encode_tile_alone_is_redone_in_float32(vaes):
    vae16, vae32 = vaes
    image = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(2)) * 2 - 1
    image[..., 10:20, 150:160] = HUGE  # only tile (0, 1) reads it: rows 0-96 and cols 128-192
    image = image.half()
    with torch.no_grad():
        plain = vae16.encode(image).latent_dist
        expected = _diffusers_with_redo(vae16, vae32).encode(image).latent_dist
    lines = []
    report = TileReport(stage=0, frame=3, warn=lines.append)
    mean, logvar = encode_rows(vae16, lambda y0, y1: image[..., y0:y1, :], (192, 192), (0, 24), report)

    assert lines == [
        "freescale: warning: VAE encode tile (rows 0-128, cols 96-192) of stage 1 frame 3 overflowed in "
        "float16; redone in float32"
    ]
    assert torch.isfinite(mean).all() and torch.isfinite(logvar).all()
    assert torch.equal(mean, expected.mean) and torch.equal(logvar, expected.logvar)
    assert not torch.isfinite(plain.mean[..., :16, 12:]).all()
    assert torch.equal(mean[..., 16:, :], plain.mean[..., 16:, :])  # tile row 1, past tile (0, 1)'s rows
    assert torch.equal(mean[..., :, :8], plain.mean[..., :, :8])  # tile column 0, before its columns
    with torch.no_grad():
        moments32 = vae32.quant_conv(vae32.encoder(image[..., :128, 96:].float()))
    mean32 = moments32[:, :4].half()
    assert torch.equal(mean[..., :12, 16:], mean32[..., :12, 4:])  # its rows and columns no other blends


def test_finite_and_float32_results_are_returned_as_they_are(vaes):
    vae16, vae32 = vaes
    lines = []
    z = _latents()[..., :16, 16:]  # a tile with no huge value
    with torch.no_grad():
        plain = vae16.decoder(vae16.post_quant_conv(z))
    got = run_tile([vae16.post_quant_conv, vae16.decoder], z, "tile", TileReport(warn=lines.append))
    assert torch.equal(got, plain)
    nan = torch.full((1, 3, 4, 4), float("nan"))
    assert run_tile([nn.Identity()], nan, "tile", TileReport(warn=lines.append)) is nan  # fp32: no redo
    assert lines == []


def test_a_tile_not_finite_even_in_float32_is_left_and_named(vaes):
    vae16, _ = vaes
    z = _latents()[..., :16, :16].clone()
    z[..., 8, 8] = float("nan")
    lines = []
    got = run_tile(
        [vae16.post_quant_conv, vae16.decoder], z, "VAE decode tile (x)", TileReport(1, None, lines.append)
    )
    assert not torch.isfinite(got).all()
    assert lines == [
        "freescale: warning: VAE decode tile (x) of stage 2 is not finite in float16 nor in float32 (its "
        "input holds NaN or Inf); left as it is"
    ]


def test_the_float32_copy_is_made_once_and_remade_when_the_weights_change():
    module = nn.Conv2d(2, 2, 1).half()
    first = fp32_copy(module)
    assert first is fp32_copy(module) and first.weight.dtype == torch.float32
    assert torch.equal(first.weight, module.weight.float())
    with torch.no_grad():
        module.weight.add_(1)
    with torch.inference_mode():  # as renders run
        second = fp32_copy(module)
    assert second is not first and torch.equal(second.weight, module.weight.float())
    assert torch.equal(second(torch.ones(1, 2, 1, 1)), module.float()(torch.ones(1, 2, 1, 1)))


def test_warnings_show_unless_quiet():
    loud, quiet, rank = io.StringIO(), io.StringIO(), io.StringIO()
    Progress(stream=loud).warn("w")
    Progress(stream=quiet, quiet=True).warn("w")
    Progress(stream=rank, quiet=True, warnings=True).warn("w")  # a rank that reports no progress
    assert (loud.getvalue(), quiet.getvalue(), rank.getvalue()) == ("w\n", "", "w\n")
