"""Region-aware detail control: a binary mask turns the cosine exponent into a per-position map (SPEC 2.6)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def load_binary_mask(path: str) -> torch.Tensor:
    """(1, 1, H, W) float mask, 1 where the grayscale image is non-zero."""
    with Image.open(path) as image:
        gray = np.asarray(image.convert("L"))
    return torch.from_numpy((gray != 0).astype(np.float32))[None, None]


def cosine_exponent(
    mask: torch.Tensor | None, latent: tuple[int, int], foreground: float, background: float
) -> torch.Tensor | float:
    """The exponent of the cosine factor: a number, or mask * fg + (1 - mask) * bg on the latent grid."""
    if mask is None:
        return foreground
    resized = F.interpolate(mask, size=latent, mode="nearest").double()
    return resized * foreground + (1 - resized) * background
