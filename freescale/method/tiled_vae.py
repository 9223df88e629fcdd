"""Row bands of diffusers' tiled VAE decode/encode and of a bicubic resize, computed from only the tiles and
source rows they need, and bit-identical on CPU fp32 to running the full-image operations."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from freescale.method.vae_fallback import TileReport, run_tile
from freescale.tiling.vae_tiles import (
    AxisTile,
    contributing_tiles,
    decode_axis_tiles,
    encode_axis_tiles,
    kept_rows,
    stitched_length,
    tiles_input_rows,
)

Rows = tuple[int, int]

_CUBIC_A = -0.75  # PyTorch's bicubic convolution constant


def _check_rows(rows: Rows, length: int) -> None:
    if not 0 <= rows[0] < rows[1] <= length:
        raise ValueError(f"rows {rows} are not a non-empty range inside [0, {length})")


def _blend_row(
    vae, above: list[Tensor] | None, row: list[Tensor], row_limit: int, blend_extent: int
) -> Tensor:
    """One tile row of diffusers' blend-and-crop loop: each tile blended, in place and in diffusers' order,
    with the (already blended) tile above it and the one to its left, then the kept parts joined.

    It reuses the VAE's own in-place blend_v/blend_h, so the arithmetic is identical. `above` may hold only
    the bottom `blend_extent` rows of each tile: blend_v reads no more.
    """
    kept = []
    for j, tile in enumerate(row):
        if above is not None:
            tile = vae.blend_v(above[j], tile, blend_extent)
        if j > 0:
            tile = vae.blend_h(row[j - 1], tile, blend_extent)
        kept.append(tile[:, :, :row_limit, :row_limit])
    return torch.cat(kept, dim=3)


def _stitch(
    vae, grid: list[list[Tensor]], row_tiles: list[AxisTile], row_limit: int, blend_extent: int
) -> Tensor:
    """diffusers' blend-and-crop loop over a contiguous run of tile rows; the first is not blended upward."""
    result_rows = []
    for i, row in enumerate(grid):
        result_rows.append(_blend_row(vae, grid[i - 1] if i > 0 else None, row, row_limit, blend_extent))
        assert result_rows[-1].shape[2] == row_tiles[i].kept, "tile output height differs from the geometry"
    return torch.cat(result_rows, dim=2)


@torch.no_grad()
def decode_rows(vae, latents: Tensor, rows: Rows, report: TileReport | None = None) -> Tensor:
    """Image rows [rows[0], rows[1]) (all columns) of `vae.enable_tiling(); vae.decode(latents).sample`.

    `latents` is the full (B, C, h, w) latent ALREADY divided by the scaling factor, as `vae.decode` takes it;
    it is cast to the VAE's device and dtype. Only the tile rows whose output (or blend source) touches
    `rows` are decoded. Without tiling (h and w <= tile_latent_min_size) it is one plain decode. An fp16
    tile that overflows is redone in float32 and named through `report` (see `run_tile`).
    """
    return torch.cat(list(decode_row_strips(vae, latents, rows, report)), dim=2)


@torch.no_grad()
def decode_row_strips(vae, latents: Tensor, rows: Rows, report: TileReport | None = None) -> Iterator[Tensor]:
    """`decode_rows(vae, latents, rows)` as consecutive strips (B, 3, n, W) from the top, one per tile row
    that supplies rows, each yielded as soon as its tile row is decoded and blended.

    Every needed tile is decoded once, and only the bottom rows of the tile row above that the vertical
    blend reads are kept between strips. Concatenated along dim 2, the strips are `decode_rows`' result
    (which is made this way), so bit-identical to diffusers' tiled decode on CPU fp32.
    """
    report = report or TileReport()
    z = latents.to(device=vae.device, dtype=vae.dtype)
    h, w = z.shape[-2:]
    tile, sample = vae.tile_latent_min_size, vae.tile_sample_min_size
    factor = sample // tile
    _check_rows(rows, h * factor)
    if not (h > tile or w > tile):
        parts = [vae.decoder] if vae.post_quant_conv is None else [vae.post_quant_conv, vae.decoder]
        box = _box("VAE decode", (0, h * factor), (0, w * factor))
        yield run_tile(parts, z, box, report)[..., rows[0] : rows[1], :]
        return

    overlap = vae.tile_overlap_factor
    row_tiles = decode_axis_tiles(h, tile, sample, overlap)
    col_tiles = decode_axis_tiles(w, tile, sample, overlap)
    blend_extent = int(sample * overlap)
    t0, t1 = contributing_tiles(row_tiles, rows)
    parts = [vae.post_quant_conv, vae.decoder] if vae.config.use_post_quant_conv else [vae.decoder]
    above = None  # bottoms of the previous tile row's blended tiles; tile row t0 is not blended upward
    for rt in row_tiles[t0:t1]:
        row = []
        for ct in col_tiles:
            part = z[:, :, rt.in_start : rt.in_start + tile, ct.in_start : ct.in_start + tile]
            box = _box("VAE decode", (rt.in_start * factor, rt.in_stop * factor),
                       (ct.in_start * factor, ct.in_stop * factor))  # fmt: skip
            # Each tile is made finite before any blending, so a NaN never reaches its neighbours.
            row.append(run_tile(parts, part, box, report))
        band = _blend_row(vae, above, row, sample - blend_extent, blend_extent)
        assert band.shape[2] == rt.kept, "tile output height differs from the geometry"
        above = [t[:, :, -blend_extent:].clone() for t in row] if blend_extent else None
        lo, hi = kept_rows(rt, rows)
        strip = [band[:, :, lo - rt.out_start : hi - rt.out_start]] if lo < hi else []
        del row, band
        if strip:
            yield strip.pop()  # so that this frame holds no reference while the caller has the strip


@torch.no_grad()
def encode_rows(
    vae,
    image_rows: Callable[[int, int], Tensor],
    image_size: tuple[int, int],
    latent_rows: Rows,
    report: TileReport | None = None,
) -> tuple[Tensor, Tensor]:
    """(mean, logvar) rows `latent_rows` of `vae.enable_tiling(); vae.encode(image).latent_dist`.

    `image_rows(y0, y1)` must return rows [y0, y1) (all columns) of the full (B, 3, H, W) image of
    `image_size` = (H, W). It is called exactly once, for the union of the rows the needed encoder tile
    rows read (callers usually make those rows by decoding and resizing, which is cheaper done once than
    per overlapping tile row). logvar is clamped to [-30, 20] as DiagonalGaussianDistribution does. An
    fp16 tile that overflows is redone in float32 and named through `report` (see `run_tile`).
    """
    report = report or TileReport()
    height, width = image_size
    tile, latent_tile = vae.tile_sample_min_size, vae.tile_latent_min_size
    factor = tile // latent_tile
    _check_rows(latent_rows, height // factor)

    def fetch(y0: int, y1: int) -> Tensor:
        x = image_rows(y0, y1).to(device=vae.device, dtype=vae.dtype)
        if tuple(x.shape[-2:]) != (y1 - y0, width):
            raise ValueError(f"image_rows({y0}, {y1}) gave shape {tuple(x.shape)}, expected width {width}")
        return x

    if not (width > tile or height > tile):
        parts = [vae.encoder] if vae.quant_conv is None else [vae.encoder, vae.quant_conv]
        moments = run_tile(parts, fetch(0, height), _box("VAE encode", (0, height), (0, width)), report)
        return _split_moments(moments[:, :, latent_rows[0] : latent_rows[1]])

    overlap = vae.tile_overlap_factor
    row_tiles = encode_axis_tiles(height, tile, latent_tile, overlap)
    col_tiles = encode_axis_tiles(width, tile, latent_tile, overlap)
    if stitched_length(row_tiles) != height // factor:
        raise ValueError(f"image height {height} does not tile into {height // factor} latent rows")
    t0, t1 = contributing_tiles(row_tiles, latent_rows)
    y0, y1 = tiles_input_rows(row_tiles, (t0, t1))
    band = fetch(y0, y1)
    parts = [vae.encoder, vae.quant_conv] if vae.config.use_quant_conv else [vae.encoder]
    grid = []
    for rt in row_tiles[t0:t1]:
        grid_row = []
        for ct in col_tiles:
            part = band[:, :, rt.in_start - y0 : rt.in_start - y0 + tile, ct.in_start : ct.in_start + tile]
            box = _box("VAE encode", (rt.in_start, rt.in_stop), (ct.in_start, ct.in_stop))
            grid_row.append(run_tile(parts, part, box, report))  # finite before the blend, as in decoding
        grid.append(grid_row)
    blend_extent = int(latent_tile * overlap)
    moments = _stitch(vae, grid, row_tiles[t0:t1], latent_tile - blend_extent, blend_extent)
    offset = row_tiles[t0].out_start
    return _split_moments(moments[:, :, latent_rows[0] - offset : latent_rows[1] - offset])


def _box(call: str, rows: Rows, cols: Rows) -> str:
    """A tile named by the image pixels it covers (what it decodes to, or what it encodes)."""
    return f"{call} tile (rows {rows[0]}-{rows[1]}, cols {cols[0]}-{cols[1]})"


def _split_moments(moments: Tensor) -> tuple[Tensor, Tensor]:
    mean, logvar = torch.chunk(moments, 2, dim=1)
    return mean, torch.clamp(logvar, -30.0, 20.0)


def sample_latents(mean: Tensor, logvar: Tensor, noise: Tensor, scaling_factor: float) -> Tensor:
    """DiagonalGaussianDistribution.sample with `noise` as its draw, times the scaling factor.

    `logvar` may come clamped or not: clamping twice is a no-op. The noise is cast to the moments' dtype
    and device, as diffusers draws it in the parameters' dtype.
    """
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    return (mean + std * noise.to(device=mean.device, dtype=mean.dtype)) * scaling_factor


def _fma(a: Tensor | float, b: Tensor, c: Tensor | float) -> Tensor:
    """a * b + c rounded once to float32, like an x86 FMA (exact float64 product, then one rounding).

    Double rounding (float64 then float32) could differ from a true FMA only when the float64 sum lands
    exactly on a float32 tie, which no tested case hit.
    """
    a = a.double() if isinstance(a, Tensor) else a
    c = c.double() if isinstance(c, Tensor) else c
    return (b.double() * a + c).float()


def _cubic_taps(out_rows: Rows, in_len: int, out_len: int, device) -> tuple[Tensor, list[Tensor]]:
    """Tap indices (n, 4) and the 4 fp32 weight vectors for output rows [o0, o1) along one axis.

    Mirrors ATen's CPU HelperInterpCubic (align_corners=False, no scale_factor) op by op, including where
    the x86-64 (AVX2) build contracts multiply-adds into FMAs, found by matching its weights bit for bit.
    """
    f32 = torch.float32
    scale = (torch.tensor(in_len, dtype=f32) / out_len).to(device)
    dst = torch.arange(*out_rows, device=device).to(f32)
    src = _fma(scale, dst + 0.5, -0.5)
    index = torch.floor(src).to(torch.int64).clamp(max=in_len - 1)
    t = (src - index.to(f32)).clamp(0.0, 1.0)
    a = _CUBIC_A

    def near(x: Tensor) -> Tensor:  # ((a + 2) x - (a + 3)) x x + 1, for |x| <= 1
        return _fma(a + 2, x, -(a + 3)) * x * x + 1

    def far(x: Tensor) -> Tensor:  # ((a x - 5 a) x + 8 a) x - 4 a, for 1 < |x| < 2
        return _fma(_fma(a, x, -5 * a), x, 8 * a) * x - 4 * a

    t2 = 1.0 - t
    weights = [far(t + 1.0), near(t), near(t2), far(t2 + 1.0)]
    taps = torch.stack([(index - 1 + k).clamp(0, in_len - 1) for k in range(4)], dim=1)
    return taps, weights


def _weighted_sum(values: list[Tensor], weights: list[Tensor]) -> Tensor:
    # ATen accumulates v0*w0 + v1*w1 + v2*w2 + v3*w3 left to right; its build fuses the first product
    # into the first add and each later product into its add.
    out = _fma(weights[0], values[0], values[1] * weights[1])
    for v, w in zip(values[2:], weights[2:], strict=True):
        out = _fma(w, v, out)
    return out


def bicubic_rows(
    source: Tensor, source_row0: int, in_size: tuple[int, int], out_size: tuple[int, int], out_rows: Rows
) -> Tensor:
    """Rows [o0, o1) of `F.interpolate(full, size=out_size, mode="bicubic", align_corners=False)`.

    `source` holds rows [source_row0, source_row0 + source.shape[-2]) and all columns of the full image of
    `in_size`; it must cover `bicubic_source_rows(out_rows, in_size[0], out_size[0])`. Like ATen, each
    source row is interpolated along the width first and the 4 rows are then combined, in fp32. On x86-64
    CPUs with ATen's AVX2 kernels this is bit-identical to F.interpolate; elsewhere (CUDA, other builds)
    it differs from F.interpolate by float32 rounding only, but never depends on how rows are banded.
    """
    (in_h, in_w), (out_h, out_w) = in_size, out_size
    _check_rows(out_rows, out_h)
    if source.shape[-1] != in_w:
        raise ValueError(f"source has {source.shape[-1]} columns, expected the full width {in_w}")
    row_taps, row_w = _cubic_taps(out_rows, in_h, out_h, source.device)
    col_taps, col_w = _cubic_taps((0, out_w), in_w, out_w, source.device)
    s0, s1 = int(row_taps.min()), int(row_taps.max()) + 1
    if s0 < source_row0 or s1 > source_row0 + source.shape[-2]:
        have = (source_row0, source_row0 + source.shape[-2])
        raise ValueError(f"source rows {have} do not cover the rows {(s0, s1)} that rows {out_rows} read")
    band = source[..., s0 - source_row0 : s1 - source_row0, :].float()
    horiz = _weighted_sum([band[..., col_taps[:, k]] for k in range(4)], col_w)
    rows = [horiz[..., row_taps[:, k] - s0, :] for k in range(4)]
    return _weighted_sum(rows, [w[:, None] for w in row_w]).to(source.dtype)
