"""The Gaussian filter G of scale fusion: separable over token rows, columns and channels (SPEC 4)."""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def gaussian_weights(kernel_size: int, sigma: float = 1.0) -> list[float]:
    """Normalised 1-D Gaussian weights centred on the middle tap."""
    centre = (kernel_size - 1) / 2
    raw = [math.exp(-((i - centre) ** 2) / (2 * sigma**2)) for i in range(kernel_size)]
    total = sum(raw)
    return [r / total for r in raw]


@lru_cache(maxsize=128)
def blur_matrix(
    weights: tuple[float, ...], length: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """(length, length) banded matrix of the zero-padded 1-D convolution: row i holds input j's weight
    for output i. Built once per length on the host: no host-device sync inside a UNet call."""
    reach = len(weights) // 2
    positions = torch.arange(length)
    offset = positions[None, :] - positions[:, None]  # j - i
    taps = torch.tensor(weights, dtype=torch.float64)[(offset + reach).clamp(0, 2 * reach)]
    matrix = torch.where(offset.abs() <= reach, taps, 0.0)
    return matrix.to(device, dtype)


def _blur_axis(x: torch.Tensor, weights: tuple[float, ...], axis: int) -> torch.Tensor:
    """Zero-padded 1-D convolution along `axis` as one matrix product: a single pass over memory on
    the matrix units, where shifted multiply-adds would make 2 * reach + 1 passes."""
    matrix = blur_matrix(weights, x.shape[axis], x.dtype, x.device)
    return torch.movedim(torch.tensordot(x, matrix, dims=([axis], [1])), -1, axis)


def gaussian_blur(
    x: torch.Tensor, kernel_size: int, sigma: float = 1.0, channels: bool = True
) -> torch.Tensor:
    """Blur (B, h, w, C) with zero padding over h and w, and over C too when `channels` (the reference).

    The reference convolves with the outer product of three 1-D kernels; applying them one axis at a
    time is the same linear map at a fraction of the cost.
    """
    if kernel_size == 1:
        return x
    weights = tuple(gaussian_weights(kernel_size, sigma))
    axes = (3, 2, 1) if channels else (2, 1)
    for axis in axes:
        x = _blur_axis(x, weights, axis)
    return x
