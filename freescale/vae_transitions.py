"""Moving between stages in pixel space: VAE decode, bicubic resize, VAE encode (SPEC 2.1-2.3).

The VAE is diffusers' tiled VAE (tile = its sample_size, overlap 0.25), as in the reference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from freescale.tiling.stages import Size


def prepare_vae(vae) -> None:
    vae.enable_tiling()


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> image in [-1, 1] (not clamped), in the VAE's dtype."""
    latents = latents.to(vae.dtype) / vae.config.scaling_factor
    return vae.decode(latents, return_dict=False)[0]


def resize(image: torch.Tensor, size: Size) -> torch.Tensor:
    return F.interpolate(image, size=tuple(size), mode="bicubic", align_corners=False)


@torch.no_grad()
def encode(vae, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Image in [-1, 1] -> a SAMPLE of the latent distribution, times the scaling factor."""
    posterior = vae.encode(image.to(vae.dtype)).latent_dist
    return posterior.sample(generator=generator) * vae.config.scaling_factor


def to_pil(image: torch.Tensor) -> Image.Image:
    """One decoded image (1, 3, H, W) in [-1, 1] -> 8-bit RGB, rounded as diffusers does."""
    array = (image[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((array * 255).round().astype(np.uint8))


def from_pil(image: Image.Image, device, dtype) -> torch.Tensor:
    """8-bit RGB -> (1, 3, H, W) in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)[None]
    return (tensor * 2 - 1).to(device=device, dtype=dtype)
