"""The Gaussian filter G of scale fusion: separable over token rows, columns and channels (SPEC 4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_weights(kernel_size: int, sigma: float = 1.0) -> list[float]:
    """Normalised 1-D Gaussian weights centred on the middle tap."""
    centre = (kernel_size - 1) / 2
    raw = [math.exp(-((i - centre) ** 2) / (2 * sigma**2)) for i in range(kernel_size)]
    total = sum(raw)
    return [r / total for r in raw]


def _blur_last_axis(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1])
    out = F.conv1d(flat, weights.view(1, 1, -1), padding=weights.numel() // 2)
    return out.reshape(shape)


def gaussian_blur(
    x: torch.Tensor, kernel_size: int, sigma: float = 1.0, channels: bool = True
) -> torch.Tensor:
    """Blur (B, h, w, C) with zero padding over h and w, and over C too when `channels` (the reference).

    The reference convolves with the outer product of three 1-D kernels; applying them one axis at a
    time is the same linear map at a fraction of the cost.
    """
    if kernel_size == 1:
        return x
    weights = torch.tensor(gaussian_weights(kernel_size, sigma), dtype=x.dtype, device=x.device)
    if channels:
        x = _blur_last_axis(x, weights)
    x = _blur_last_axis(x.transpose(2, 3), weights).transpose(2, 3)  # along w
    x = _blur_last_axis(x.transpose(1, 3), weights).transpose(1, 3)  # along h
    return x
