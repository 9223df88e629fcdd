"""A rank's device memory by part: the UNet's activations on its band (calibrated on measured peaks), the
whole-grid keys/values it gathers, the rows its local windows borrow, the VAE's working set."""

from __future__ import annotations

from freescale.planning.cost_calibration import DeviceCalibration
from freescale.planning.cost_model import level_bands_at, level_grid
from freescale.planning.unet_profile import UNetProfile
from freescale.planning.vae_cost import VaeWork
from freescale.tiling.bands import Band
from freescale.tiling.windows import local_windows, windows_touching_rows


def activation_bytes(
    device: DeviceCalibration, profile: UNetProfile, mode: str, pixels: int, dtype_bytes: int
) -> float:
    """Peak of the UNet call's own tensors for `pixels` = batch x band latent pixels: the measured
    bytes per pixel (SDXL, one device), scaled by element size and by the network's width."""
    scale = (
        dtype_bytes / device.activation_dtype_bytes * profile.base_channels / device.activation_base_channels
    )
    per_pixel = device.activation_bytes_per_pixel[mode]
    return (pixels * per_pixel + device.activation_fixed_bytes[mode]) * scale


def attention_working_set(
    profile: UNetProfile,
    latent: tuple[int, int],
    bands: list[Band],
    rank: int,
    batch: int,
    n: int,
    dtype_bytes: int,
) -> tuple[int, int]:
    """(gathered keys/values, projections of borrowed window rows) in bytes, at the self-attention layer
    where their sum is largest; both are zero on one rank (the calibrated activations include them).

    With equal bands all_gather_rows receives every rank's rows in place: the gathered keys/values cost the
    full grid's. With unequal ones it holds every rank's padded band (world x longest rows) and then the
    assembled grid, about twice that. The local branch projects q, k and v of every row its windows cover,
    which past the band's own rows is extra."""
    world = len(bands)
    if world == 1:
        return 0, 0
    best = (0, 0)
    for attn, _ in profile.attention_groups:
        (h, w) = grid = level_grid(latent, attn.level)
        level_bands = level_bands_at(tuple(bands), attn.level)
        longest = max(b - a for a, b in level_bands)
        equal = all(b - a == longest for a, b in level_bands)
        kv = (h if equal else world * longest + h) * 2 * batch * w * attn.inner_dim * dtype_bytes
        windows = local_windows(grid, n, None)
        (lo, hi), (a, b) = windows_touching_rows(windows, level_bands[rank]).rows, level_bands[rank]
        padded = w + 2 * windows.pad[1]
        borrowed = 3 * batch * max(0, (hi - lo) - (b - a)) * padded * attn.inner_dim * dtype_bytes
        if kv + borrowed > sum(best):
            best = (kv, borrowed)
    return best


def vae_bytes(
    device: DeviceCalibration,
    work: VaeWork,
    widths: tuple[int, int],
    tile: int,
    vae_dtype_bytes: int,
) -> float:
    """Working set of a transition or an output decode: one tile's measured peak (scaled by tile area
    and element size) plus the decoded rows it keeps for the resize (tile grid and stitched copy) and
    the fp32 resized rows it encodes. widths = (decoded image width, encoded or output image width)."""
    vae = device.vae
    if vae is None:
        return 0.0
    scale = (tile / vae.tile) ** 2 * vae_dtype_bytes / vae.dtype_bytes
    peaks = [vae.decode_peak_bytes if work.decode_latent_pixels else 0]
    peaks.append(vae.encode_peak_bytes if work.encode_pixels else 0)
    decoded = 2 * 3 * work.decoded_rows * widths[0] * vae_dtype_bytes
    resized = 2 * 3 * work.image_rows * widths[1] * 4 if work.encode_pixels else 0
    return max(peaks) * scale + decoded + resized


def latent_bytes(channels: int, rows: int, cols: int, dtype_bytes: int) -> int:
    return channels * rows * cols * dtype_bytes
