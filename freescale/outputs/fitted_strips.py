"""The last stage's strips as the exact output size asks (`image_size`): its centre cut out, or with
--fit resize the whole stage resized (Lanczos), streamed strip by strip; other stages pass as they are."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from freescale.outputs.lanczos_strips import lanczos_strips
from freescale.tiling.fitted_stages import crop_offsets

if TYPE_CHECKING:
    from freescale.config.render_config import RenderConfig

Size = tuple[int, int]  # (H, W)


def centre_cropped(strips: Iterable[np.ndarray], size: Size, out_size: Size) -> Iterator[np.ndarray]:
    """The centred `out_size` box of the image of `size` given as `strips` (`crop_offsets`): rows above
    and below it are read and dropped (every strip is consumed, so its sender is done), columns sliced."""
    top, left = crop_offsets(size, out_size)
    bottom, right = top + out_size[0], left + out_size[1]
    row = 0
    for strip in strips:
        start, stop = row, row + len(strip)
        row = stop
        if stop > top and start < bottom:
            yield np.ascontiguousarray(strip[max(top - start, 0) : min(bottom, stop) - start, left:right])
        del strip
    if row != size[0]:
        raise ValueError(f"the strips hold {row} rows, the image {size[0]}")


def fitted(
    strips: Iterable[np.ndarray], config: RenderConfig, stage: int
) -> tuple[Iterable[np.ndarray], Size]:
    """(strips, size) of `stage` as its file is written: the last stage cut or resized to the config's
    `image_size` (by its `fit`), where one is set; any other stage, or no image size, as rendered."""
    size = tuple(config.stages[stage])
    image_size = config.image_size
    if stage != len(config.stages) - 1 or image_size is None or tuple(image_size) == size:
        return strips, size
    image_size = tuple(image_size)
    if config.input_image is not None:  # an upscale: the input's aspect kept through the 64-px rounding
        from freescale.outputs.upscale_output import upscale_fitted

        return upscale_fitted(strips, config)
    if config.fit == "resize":
        return lanczos_strips(strips, size, image_size), image_size
    return centre_cropped(strips, size, image_size), image_size
