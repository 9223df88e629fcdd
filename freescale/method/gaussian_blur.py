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


def gaussian_blur(
    x: torch.Tensor, kernel_size: int, sigma: float = 1.0, channels: bool = True
) -> torch.Tensor:
    """Blur (B, h, w, C) with zero padding over h and w, and over C too when `channels` (the reference).

    The reference convolves with the outer product of three 1-D kernels; applying them one axis at a
    time is the same linear map at a fraction of the cost. Each axis is one matrix product with a banded
    matrix (a single pass over memory on the matrix units, where shifted multiply-adds would make
    2 * reach + 1), taken where the axis lies, so that no axis is moved in memory first.
    """
    if kernel_size == 1:
        return x
    weights = tuple(gaussian_weights(kernel_size, sigma))
    b, h, w, c = x.shape

    def matrix(length: int) -> torch.Tensor:
        return blur_matrix(weights, length, x.dtype, x.device)

    if channels:
        x = x @ matrix(c).T
    x = torch.matmul(matrix(w), x.reshape(b * h, w, c))  # every row's columns
    x = torch.matmul(matrix(h), x.reshape(b, h, w * c))  # every image's rows
    return x.view(b, h, w, c)
