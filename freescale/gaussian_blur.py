"""The Gaussian filter G of scale fusion: separable over token rows, columns and channels (SPEC 4)."""

from __future__ import annotations

import math

import torch


def gaussian_weights(kernel_size: int, sigma: float = 1.0) -> list[float]:
    """Normalised 1-D Gaussian weights centred on the middle tap."""
    centre = (kernel_size - 1) / 2
    raw = [math.exp(-((i - centre) ** 2) / (2 * sigma**2)) for i in range(kernel_size)]
    total = sum(raw)
    return [r / total for r in raw]


def _blur_axis(x: torch.Tensor, weights: list[float], axis: int) -> torch.Tensor:
    """Zero-padded 1-D convolution along `axis` as a few shifted multiply-adds: a handful of passes
    over memory, several times faster than a one-channel conv1d over millions of rows."""
    reach, length = len(weights) // 2, x.shape[axis]
    out = x * weights[reach]
    for shift in range(1, min(reach, length - 1) + 1):
        out.narrow(axis, 0, length - shift).add_(
            x.narrow(axis, shift, length - shift), alpha=weights[reach + shift]
        )
        out.narrow(axis, shift, length - shift).add_(
            x.narrow(axis, 0, length - shift), alpha=weights[reach - shift]
        )
    return out


def gaussian_blur(
    x: torch.Tensor, kernel_size: int, sigma: float = 1.0, channels: bool = True
) -> torch.Tensor:
    """Blur (B, h, w, C) with zero padding over h and w, and over C too when `channels` (the reference).

    The reference convolves with the outer product of three 1-D kernels; applying them one axis at a
    time is the same linear map at a fraction of the cost.
    """
    if kernel_size == 1:
        return x
    weights = gaussian_weights(kernel_size, sigma)
    axes = (3, 2, 1) if channels else (2, 1)
    for axis in axes:
        x = _blur_axis(x, weights, axis)
    return x
