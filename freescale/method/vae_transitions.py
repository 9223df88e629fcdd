"""Moving between stages in pixel space, one row band at a time (SPEC 2.1-2.3, 7).

decode -> bicubic resize -> encode -> sample, computing only the VAE tiles and image rows that a
band of the next latent needs; the arithmetic is diffusers' tiled VAE (tile = sample_size,
overlap 0.25), the reference's, so a band equals the same rows of the whole-image computation. An fp16
VAE tile that overflows is redone in float32 and named through a `TileReport` (see `vae_fallback`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image

from freescale.config.input_images import unit_rgb
from freescale.method.tiled_vae import (
    bicubic_rows,
    decode_row_strips,
    decode_rows,
    encode_rows,
    sample_latents,
)
from freescale.method.vae_fallback import TileReport
from freescale.models.native_resolution import vae_scale_from_config
from freescale.tiling.bands import Band
from freescale.tiling.stages import Size
from freescale.tiling.vae_tiles import bicubic_source_rows


def vae_scale(vae) -> int:
    return vae_scale_from_config(vae.config)


@torch.no_grad()
def decode_band(
    vae, latents: torch.Tensor, pixel_rows: Band, report: TileReport | None = None
) -> torch.Tensor:
    """Rows of the decoded image in [-1, 1] (not clamped) from the whole stage's latents."""
    return decode_rows(vae, latents.to(vae.dtype) / vae.config.scaling_factor, pixel_rows, report)


@torch.no_grad()
def decode_band_strips(
    vae, latents: torch.Tensor, pixel_rows: Band, report: TileReport | None = None
) -> Iterator[torch.Tensor]:
    """`decode_band` as consecutive strips, one per VAE tile row, each yielded once decoded (see
    `decode_row_strips`): each tile decoded once, only the previous tile row's blend rows kept."""
    return decode_row_strips(vae, latents.to(vae.dtype) / vae.config.scaling_factor, pixel_rows, report)


def pixel_strips(
    vae, latents: torch.Tensor, pixel_rows: Band, bit_depth: int = 8, report: TileReport | None = None
) -> Iterator[np.ndarray]:
    """`decode_band_strips` as (n, W, 3) uint8/uint16 pixel strips, ready for `write_image_strips`."""
    for strip in decode_band_strips(vae, latents, pixel_rows, report):
        pixels = [to_pixels(strip, bit_depth)]
        del strip  # the decoded floats are 4 (8-bit) or 2 (16-bit) times the pixels' size
        yield pixels.pop()  # so that this frame holds no reference while the caller has the strip


@torch.no_grad()
def next_stage_band(
    vae,
    previous: torch.Tensor,
    size: Size,
    rows: Band,
    noise: torch.Tensor,
    report: TileReport | None = None,
) -> torch.Tensor:
    """Latent rows `rows` of x0 for a stage of `size` px: decode the previous stage's latents, resize
    bicubically, encode, and sample with `noise` (this band of the stage's full keyed draw). `report`
    names the new stage: a decode tile redone in float32 is named as the stage before it."""
    report = report or TileReport()
    decoded = report if report.stage is None else report.of_stage(report.stage - 1)
    scale = vae_scale(vae)
    previous_size = (previous.shape[-2] * scale, previous.shape[-1] * scale)
    latents = previous.to(vae.dtype) / vae.config.scaling_factor

    def resized_rows(y0: int, y1: int) -> torch.Tensor:
        s0, s1 = bicubic_source_rows((y0, y1), previous_size[0], size[0])
        source = decode_rows(vae, latents, (s0, s1), decoded)
        return bicubic_rows(source, s0, previous_size, tuple(size), (y0, y1))

    mean, logvar = encode_rows(vae, resized_rows, tuple(size), rows, report)
    return sample_latents(mean, logvar, noise, vae.config.scaling_factor)


@torch.no_grad()
def encode_image(
    vae, image: torch.Tensor, noise: torch.Tensor, report: TileReport | None = None
) -> torch.Tensor:
    """A whole image in [-1, 1] -> sampled latents times the scaling factor (image-to-image base)."""
    rows = (0, image.shape[-2] // vae_scale(vae))
    size = tuple(image.shape[-2:])
    mean, logvar = encode_rows(vae, lambda y0, y1: image[..., y0:y1, :], size, rows, report)
    return sample_latents(mean, logvar, noise, vae.config.scaling_factor)


def to_pixels(image: torch.Tensor, bit_depth: int = 8) -> np.ndarray:
    """Decoded rows (1, 3, h, W) in [-1, 1] -> (h, W, 3) uint8 (rounded as diffusers does) or uint16,
    quantised from the VAE's float output, not from an 8-bit image."""
    array = (image[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    if bit_depth == 16:
        return (array * 65535).round().astype(np.uint16)
    return (array * 255).round().astype(np.uint8)


def from_pil(image: Image.Image, device, dtype) -> torch.Tensor:
    """An 8- or 16-bit image (gray, RGB, palette; alpha dropped) -> (1, 3, H, W) in [-1, 1], each value
    divided by its full scale (255 or 65535); pass it unloaded, as Image.open gives it."""
    array = unit_rgb(image)
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None]
    return (tensor * 2 - 1).to(device=device, dtype=dtype)
