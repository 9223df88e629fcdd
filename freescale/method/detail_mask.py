"""Region-aware detail control: a binary mask turns the cosine exponent into a per-position map (SPEC 2.6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from freescale.config.input_images import exact_values, is_png16, open_image


@dataclass(frozen=True)
class DetailMask:
    """A binary mask at its own size, packed 1 bit a pixel (an 8192x8192 mask holds 8 MB)."""

    bits: np.ndarray  # (height, ceil(width / 8)) uint8, np.packbits along the rows
    height: int
    width: int

    def resized(self, latent: tuple[int, int]) -> torch.Tensor:
        """(1, 1, h, w) float64: exactly F.interpolate(mask, latent, mode="nearest") of the whole mask,
        computed from the rows and columns that nearest picks."""
        rows = _nearest_sources(self.height, latent[0])
        columns = _nearest_sources(self.width, latent[1])
        picked = np.unpackbits(self.bits[rows], axis=1, count=self.width)[:, columns]
        return torch.from_numpy(picked).double()[None, None]


def load_binary_mask(path: str) -> DetailMask:
    """The detail mask of an image: its alpha channel where it has one (RGBA, LA, PA, a transparency
    key), else its gray value (Pillow's luma for colour, 16-bit values in full); non-zero = detail."""
    with open_image(path, "--mask") as image:
        detail = _detail_values(image) != 0
    return DetailMask(np.packbits(detail, axis=1), detail.shape[0], detail.shape[1])


def cosine_exponent(
    mask: DetailMask | None, latent: tuple[int, int], foreground: float, background: float
) -> torch.Tensor | float:
    """The exponent of the cosine factor: a number, or mask * fg + (1 - mask) * bg on the latent grid."""
    if mask is None:
        return foreground
    resized = mask.resized(tuple(latent))
    return resized * foreground + (1 - resized) * background


def _detail_values(image: Image.Image) -> np.ndarray:
    """(H, W) values whose non-zero positions are the detail region."""
    if image.mode in ("LA", "PA", "RGBA") or "transparency" in image.info:
        if image.mode in ("LA", "RGBA"):
            return exact_values(image)[..., -1]  # 16-bit PNG alpha in full
        return np.asarray(image.convert("RGBA").getchannel("A"))
    if image.mode == "RGB" and is_png16(image):  # Pillow's RGB -> L weights, on the 16-bit values
        r, g, b = (channel.astype(np.int64) for channel in np.moveaxis(exact_values(image), -1, 0))
        return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
    if image.mode.startswith("I"):
        return exact_values(image)
    return np.asarray(image.convert("L"))


def _nearest_sources(size: int, resized: int) -> np.ndarray:
    """The source index of each output position in torch's nearest resize of `size` to `resized`, got
    from torch itself (a float32 index ramp, exact up to 2**24, through the same CPU kernel)."""
    ramp = torch.arange(size, dtype=torch.float32).view(1, 1, size, 1)
    return F.interpolate(ramp, size=(resized, 1), mode="nearest").view(-1).long().numpy()
