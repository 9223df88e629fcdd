"""A model's trained resolutions ("buckets") and the one nearest a target's aspect ratio: the base stage of
a render whose size is not a whole multiple of the native resolution."""

from __future__ import annotations

import math
from functools import cache

from freescale.tiling.stages import Size

BUCKET_STEP = 64  # every side a multiple of 64, as the UNets take
# A bucket's area lies within 10 % below the native area R x R, and its aspect within 1:4 .. 4:1.
MIN_AREA_NUMERATOR, MIN_AREA_DENOMINATOR = 9, 10
MAX_ASPECT = 4


@cache
def trained_buckets(native: int) -> tuple[Size, ...]:
    """Every (h, w) in multiples of 64 with 0.9 R^2 <= h * w <= R^2 and 1/4 <= h / w <= 4, by height.

    For R = 1024 these are exactly SDXL's 41 multi-aspect training sizes (512x2048 ... 832x1216 ...
    1024x1024 ... 2048x512); for R = 512 (SD1.5, SDXL-Turbo) the 512-area family 256x1024 ... 512x512."""
    area = native * native
    sides = range(BUCKET_STEP, MAX_ASPECT * native + 1, BUCKET_STEP)
    buckets = tuple(
        (h, w)
        for h in sides
        for w in sides
        if MIN_AREA_DENOMINATOR * h * w >= MIN_AREA_NUMERATOR * area
        and h * w <= area
        and h <= MAX_ASPECT * w
        and w <= MAX_ASPECT * h
    )
    if not buckets:  # a native size under 64 px: nothing to choose from, the native square itself
        return ((native, native),)
    return buckets


def aspect_distance(size: Size, aspect: Size) -> float:
    """|ln(h/w) - ln(a_h/a_w)|: how far `size`'s shape is from the aspect (a_h, a_w), the same for a ratio
    and its inverse."""
    return abs(math.log(size[0] * aspect[1]) - math.log(size[1] * aspect[0]))


def nearest_bucket(aspect: Size, native: int) -> Size:
    """The trained size whose aspect is nearest `aspect` = (a_h, a_w) (any positive integers, e.g. a
    target's (H, W)); between equally near ones the larger area, then the taller."""
    return min(trained_buckets(native), key=lambda b: (aspect_distance(b, aspect), -b[0] * b[1], -b[0]))


def aspect_range(native: int) -> tuple[Size, Size]:
    """The tallest and the widest trained sizes: targets beyond their aspects have no base to grow from."""
    buckets = trained_buckets(native)
    tallest = max(buckets, key=lambda b: (b[0] / b[1], b[0]))
    widest = max(buckets, key=lambda b: (b[1] / b[0], b[1]))
    return tallest, widest


def within_trained_aspects(aspect: Size, native: int) -> bool:
    """Whether (a_h, a_w) lies between the tallest and the widest trained aspects (exact integer test)."""
    tallest, widest = aspect_range(native)
    # a_h / a_w <= tallest_h / tallest_w and a_w / a_h <= widest_w / widest_h
    return aspect[0] * tallest[1] <= tallest[0] * aspect[1] and aspect[1] * widest[0] <= widest[1] * aspect[0]
