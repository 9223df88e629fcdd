"""Moving a clip between stages frame by frame: its latents (1, C, F, h, w) resized in latent space (the
default), or each frame decoded, resized and encoded as images are; and an input clip's frames encoded
as the base stage of a video-to-video render."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from freescale.method.vae_fallback import TileReport
from freescale.method.vae_transitions import encode_image, next_stage_band
from freescale.tiling.bands import Band
from freescale.tiling.stages import Size


def upsampled_latents(previous: torch.Tensor, latent_size: Size) -> torch.Tensor:
    """Each frame's latents resized bicubically to `latent_size` (h, w), in float32; every rank computes
    the whole (it is small) and keeps its band, so the result does not depend on the sharding."""
    frames = previous[0].transpose(0, 1).float()  # (F, C, h, w)
    resized = F.interpolate(frames, size=tuple(latent_size), mode="bicubic", align_corners=False)
    return resized.transpose(0, 1)[None].to(previous.dtype)


@torch.no_grad()
def next_stage_frames_band(
    vae,
    previous: torch.Tensor,
    size: Size,
    rows: Band,
    noise: torch.Tensor,
    report: TileReport | None = None,
    first_frame: int = 0,
) -> torch.Tensor:
    """Latent rows `rows` of every frame of the next stage through pixel space (`--upsample rgb`): each
    frame as `next_stage_band` moves an image; `noise` is this band of the stage's (1, C, F, h, w) draw.
    A VAE tile redone in float32 is named with its frame in the clip (`first_frame` is frame 0's)."""
    report = report or TileReport()
    bands = [
        next_stage_band(vae, previous[:, :, f], size, rows, noise[:, :, f], report.of_frame(first_frame + f))
        for f in range(previous.shape[2])
    ]
    return torch.stack(bands, dim=2)


def padded_frame(pixels: np.ndarray, base: Size, device, dtype) -> torch.Tensor:
    """An (H, W, 3) uint8 or uint16 frame as (1, 3, h, w) in [-1, 1], its last row and column repeated
    down and right to the base stage's size (a multiple of 64; cropped off again at the end)."""
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    tensor = torch.from_numpy(pixels.astype(np.float32) / scale).permute(2, 0, 1)[None] * 2 - 1
    pad = (0, base[1] - tensor.shape[-1], 0, base[0] - tensor.shape[-2])
    return F.pad(tensor, pad, mode="replicate").to(device=device, dtype=dtype)


@torch.no_grad()
def encode_clip(
    vae,
    frames: Iterable[np.ndarray],
    base: Size,
    noise: torch.Tensor,
    report: TileReport | None = None,
    first_frame: int = 0,
) -> torch.Tensor:
    """The base stage of a video-to-video render: every frame padded and encoded as an image-to-image
    base is, sampled with its frame of `noise` (1, C, F, h, w); returns latents of noise's shape. A VAE
    tile redone in float32 is named with its frame in the clip (`first_frame` is frame 0's)."""
    report = report or TileReport()
    latents = []
    for f, pixels in enumerate(frames):
        image = padded_frame(pixels, base, vae.device, vae.dtype)
        latents.append(
            encode_image(vae, image, noise[:, :, f].to(vae.device), report.of_frame(first_frame + f))
        )
    if len(latents) != noise.shape[2]:
        raise ValueError(f"the input clip gave {len(latents)} frames, {noise.shape[2]} were expected")
    return torch.stack(latents, dim=2)
