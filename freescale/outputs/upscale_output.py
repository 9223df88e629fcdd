"""An upscale's files as its input asks: the input's ICC profile, and in the last stage gray for a gray
input and the input's alpha (Lanczos-resized, streamed) attached; other renders' files pass unchanged."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from freescale.config.user_image import UserImage, read_user_image, user_image_facts
from freescale.outputs.fitted_strips import centre_cropped
from freescale.outputs.image_output import OutputOptions
from freescale.outputs.lanczos_strips import ROWS_PER_STRIP, lanczos_strips
from freescale.tiling.upscale_stages import cover_size

if TYPE_CHECKING:
    from freescale.config.render_config import RenderConfig

Size = tuple[int, int]  # (H, W)
# Pillow's RGB -> L weights (ITU-R 601-2 luma) in 16-bit fixed point, rounded: the same values as
# `convert("L")` gives for 8-bit pixels.
LUMA_WEIGHTS = (19595, 38470, 7471)


def gray_strips(strips: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """(rows, W, 3) strips -> (rows, W, 1) luma of the same dtype (Pillow's rounding, for 16 bits too)."""
    r, g, b = LUMA_WEIGHTS
    for strip in strips:
        wide = strip.astype(np.int64)
        luma = (wide[..., 0] * r + wide[..., 1] * g + wide[..., 2] * b + (1 << 15)) >> 16
        del wide
        yield luma.astype(strip.dtype)[..., None]
        del strip


def _in_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """8- or 16-bit values in the other depth (x 257 up, rounded down), or as they are."""
    if values.dtype == dtype:
        return values
    if dtype == np.uint16:
        return values.astype(np.uint16) * 257
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def content_size(config: RenderConfig) -> Size:
    """What the last stage is resized to before the cut: the input's aspect covering the output
    (`cover_size`) with --fit crop, the output itself with --fit resize."""
    target = tuple(config.image_size or config.stages[-1])
    if config.fit == "resize":
        return target
    return cover_size(user_image_facts(config.input_image).size, target)


def _cut(strips: Iterable[np.ndarray], size: Size, config: RenderConfig) -> tuple[Iterator[np.ndarray], Size]:
    """`strips` of an image of `size` Lanczos-resized to `content_size`, then its centre cut to the output."""
    content, target = content_size(config), tuple(config.image_size or config.stages[-1])
    resized = iter(strips) if tuple(size) == content else lanczos_strips(strips, tuple(size), content)
    return (resized if content == target else centre_cropped(resized, content, target)), target


def upscale_fitted(strips: Iterable[np.ndarray], config: RenderConfig) -> tuple[Iterator[np.ndarray], Size]:
    """An upscale's last stage as its output: resized (Lanczos) to the input's aspect covering the output
    size, its centre cut (--fit crop); or resized to the output size (--fit resize). Unlike a render's
    plain cut, the 64-px rounding of the last stage neither stretches the input nor cuts it off."""
    return _cut(strips, tuple(config.stages[-1]), config)


def alpha_strips(
    image: UserImage, config: RenderConfig, dtype: np.dtype
) -> tuple[Iterator[np.ndarray], Size]:
    """The input's alpha as the output's: Lanczos-resized from the input straight to `content_size` and cut
    as the colour is, streamed as (rows, W, 1) strips of `dtype`."""
    alpha = _in_dtype(image.alpha, np.dtype(dtype))
    pieces = (alpha[top : top + ROWS_PER_STRIP, :, None] for top in range(0, len(alpha), ROWS_PER_STRIP))
    return _cut(pieces, image.size, config)


def with_alpha(colour: Iterable[np.ndarray], alpha: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Each colour strip with the same rows of `alpha` appended as its last channel (any strip heights)."""
    alpha = iter(alpha)
    pending: np.ndarray | None = None
    for strip in colour:
        while pending is None or len(pending) < len(strip):
            more = next(alpha)
            pending = more if pending is None else np.concatenate([pending, more])
        yield np.concatenate([strip, pending[: len(strip)]], axis=2)
        pending = pending[len(strip) :]
        del strip
    left = (0 if pending is None else len(pending)) + sum(len(rest) for rest in alpha)
    if left:
        raise ValueError(f"the alpha has {left} rows more than the image")


def finished(
    strips: Iterable[np.ndarray], size: Size, config: RenderConfig, stage: int, options: OutputOptions
) -> tuple[Iterable[np.ndarray], Size, OutputOptions]:
    """(strips, size, options) of a stage's file as `fitted` gives it. An upscale's files carry its input's
    ICC profile (a gray input's only on its gray last stage; an untagged input's files say sRGB); its
    last stage is gray for a gray input and has the input's alpha where it had one."""
    if config.input_image is None:
        return strips, size, options
    image = read_user_image(config.input_image)
    if stage != len(config.stages) - 1:
        return (
            strips,
            size,
            dataclasses.replace(options, icc_profile=None if image.gray else image.icc_profile),
        )
    dtype = np.dtype(np.uint16 if config.bit_depth == 16 else np.uint8)
    colour = gray_strips(strips) if image.gray else strips
    mode = "L" if image.gray else "RGB"
    if image.alpha is not None:
        alpha, alpha_size = alpha_strips(image, config, dtype)
        if tuple(alpha_size) != tuple(size):
            raise AssertionError(f"the alpha is {alpha_size}, the image {size}")
        colour, mode = with_alpha(colour, alpha), mode + "A"
    profile = image.icc_profile or (b"" if image.gray else None)  # no sRGB profile on a gray image
    return colour, size, dataclasses.replace(options, mode=mode, icc_profile=profile)
