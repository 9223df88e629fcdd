"""Stages for an output of any size (H, W): from the trained size nearest its aspect, doubling, to the size
rounded up to multiples of 64; and the centred box of the exact size in the last stage."""

from __future__ import annotations

from freescale.tiling.buckets import nearest_bucket
from freescale.tiling.stages import Size, doubling_stages, round_up, stages_for_target


def is_native_multiple(target: Size, native: int) -> bool:
    """Whether both sides are whole multiples of the native size (what `stages_for_target` takes)."""
    return target[0] % native == 0 and target[1] % native == 0


def last_stage_for(target: Size, base: Size, native: int) -> Size:
    """The target rounded up to multiples of 64, at least the base on each side; a stage above the base
    is also at least the native size on each side (the method's n = H // R is at least 1 there)."""
    last = (max(round_up(target[0]), base[0]), max(round_up(target[1]), base[1]))
    if last == base:
        return base
    return (max(last[0], round_up(native)), max(last[1], round_up(native)))


def fitted_stages(target: Size, native: int, rule: str) -> tuple[Size, ...]:
    """The stages of a render whose output is exactly `target` (H, W).

    A whole multiple of the native size on each side keeps `stages_for_target`'s stages, ending at the
    target itself. Any other size: the base is the trained size nearest the target's aspect
    (`nearest_bucket`), the last stage `last_stage_for` the target, 'double' puts base x2, x4 ... in
    between and 'direct' nothing; the output is then cut (or resized) from the last stage."""
    if is_native_multiple(target, native):
        return stages_for_target(target, native, rule)
    base = nearest_bucket(target, native)
    return doubling_stages(base, last_stage_for(target, base, native), rule)


def aspect_stages(aspect: Size, native: int, scale: int, rule: str) -> tuple[Size, ...]:
    """The stages of `--aspect` (a_h, a_w) with `--scale`: the trained size nearest the aspect, then
    ('double') x2, x4 ... up to `scale` times it ('direct': straight there); scale 1 is the base alone."""
    base = nearest_bucket(aspect, native)
    return doubling_stages(base, (base[0] * scale, base[1] * scale), rule)


def aspect_box(stage: Size, aspect: Size) -> Size:
    """The largest (h, w) of aspect (a_h, a_w) inside `stage`: one side the stage's, the other rounded to
    the nearest pixel (halves up)."""
    height, width = stage
    if height * aspect[1] <= width * aspect[0]:  # the stage is wider than the aspect: keep its height
        return (height, max(1, min(width, (2 * height * aspect[1] + aspect[0]) // (2 * aspect[0]))))
    return (max(1, min(height, (2 * width * aspect[0] + aspect[1]) // (2 * aspect[1]))), width)


def crop_offsets(stage: Size, size: Size) -> tuple[int, int]:
    """(top, left) of the centred `size` box in `stage`; an odd leftover row or column goes to the bottom
    or the right."""
    if size[0] > stage[0] or size[1] > stage[1] or min(size) < 1:
        raise ValueError(f"size {size} does not fit in the stage {stage}")
    return ((stage[0] - size[0]) // 2, (stage[1] - size[1]) // 2)
