"""How much VAE work a rank does at a stage transition (decode the previous stage's tiles its band reads,
resize, encode its band's tiles) and for its rows of an output image: tile pixels, from the geometry."""

from __future__ import annotations

from dataclasses import dataclass

from freescale.tiling.bands import Band
from freescale.tiling.vae_tiles import (
    AxisTile,
    bicubic_source_rows,
    contributing_tiles,
    decode_axis_tiles,
    encode_axis_tiles,
    tiles_input_rows,
)

OVERLAP = 0.25  # diffusers' tile_overlap_factor, the reference's


@dataclass(frozen=True)
class VaeWork:
    decode_latent_pixels: int  # latent pixels fed to the decoder, over all tiles
    encode_pixels: int  # image pixels fed to the encoder, over all tiles
    decoded_rows: int  # image rows (all columns) the rank decodes and keeps for the resize
    image_rows: int  # rows of the stage's image (all columns) the rank resizes and encodes, or outputs


def _span(tiles: list[AxisTile], first: int, stop: int) -> int:
    return sum(t.in_stop - t.in_start for t in tiles[first:stop])


def _decode(latent: tuple[int, int], rows: Band, tile: int, scale: int) -> tuple[int, Band]:
    """(latent pixels decoded, image rows produced) for image rows `rows` of a tiled decode."""
    h, w = latent
    latent_tile = tile // scale
    if h <= latent_tile and w <= latent_tile:  # one plain decode of the whole latent
        return h * w, (0, h * scale)
    row_tiles = decode_axis_tiles(h, latent_tile, tile, OVERLAP)
    col_tiles = decode_axis_tiles(w, latent_tile, tile, OVERLAP)
    t0, t1 = contributing_tiles(row_tiles, rows)
    produced = (row_tiles[t0].out_start, row_tiles[t1 - 1].out_start + row_tiles[t1 - 1].kept)
    return _span(row_tiles, t0, t1) * _span(col_tiles, 0, len(col_tiles)), produced


def transition_work(
    previous: tuple[int, int], size: tuple[int, int], rows: Band, tile: int, scale: int
) -> VaeWork:
    """VAE work of the band of latent rows `rows` of a stage of `size` px, from a stage of `previous` px."""
    height, width = size
    if height <= tile and width <= tile:
        image_rows: Band = (0, height)
        encoded = height * width
    else:
        latent_tile = tile // scale
        row_tiles = encode_axis_tiles(height, tile, latent_tile, OVERLAP)
        col_tiles = encode_axis_tiles(width, tile, latent_tile, OVERLAP)
        t0, t1 = contributing_tiles(row_tiles, rows)
        image_rows = tiles_input_rows(row_tiles, (t0, t1))
        encoded = _span(row_tiles, t0, t1) * _span(col_tiles, 0, len(col_tiles))
    source = bicubic_source_rows(image_rows, previous[0], height)
    latent = (previous[0] // scale, previous[1] // scale)
    decoded, produced = _decode(latent, source, tile, scale)
    return VaeWork(decoded, encoded, produced[1] - produced[0], image_rows[1] - image_rows[0])


def output_work(size: tuple[int, int], pixel_rows: Band, tile: int, scale: int) -> VaeWork:
    """VAE work of decoding image rows `pixel_rows` of a stage for the output file."""
    latent = (size[0] // scale, size[1] // scale)
    decoded, produced = _decode(latent, pixel_rows, tile, scale)
    return VaeWork(decoded, 0, produced[1] - produced[0], pixel_rows[1] - pixel_rows[0])
