"""Stages of an upscale of the user's own image (H, W): the trained size nearest the input's aspect, doubling,
to a last stage in multiples of 64 holding the asked size (the input's aspect covering it, or with
--fit resize the asked size itself), cut or resized to it."""

from __future__ import annotations

from fractions import Fraction

from freescale.tiling.buckets import nearest_bucket
from freescale.tiling.fitted_stages import last_stage_for
from freescale.tiling.stages import Size, doubling_stages

UPSCALE_FITS = ("crop", "resize")


def scaled_size(input_size: Size, scale: Fraction) -> Size:
    """`scale` times the input's (h, w), each side rounded to the nearest pixel (halves up), at least 1."""
    return tuple(max(1, int(side * scale + Fraction(1, 2))) for side in input_size)


def cover_size(input_size: Size, target: Size) -> Size:
    """The smallest (h, w) of the input's aspect that covers `target`: one side the target's, the other
    rounded up (exact integer arithmetic)."""
    (ih, iw), (th, tw) = input_size, target
    if th * iw >= tw * ih:  # the target is relatively taller: its height decides
        return (th, max(tw, -(-iw * th // ih)))
    return (max(th, -(-ih * tw // iw)), tw)


def upscale_stages(input_size: Size, target: Size, native: int, rule: str, fit: str) -> tuple[Size, ...]:
    """The stages of an upscale of an input of `input_size` to exactly `target` (both (h, w)).

    The base is the trained size nearest the input's aspect (`nearest_bucket`: multiples of 64, about the
    native area), where the input is resized to. The last stage is `last_stage_for` the input's aspect
    covering the target ('crop': its centre is then cut out, the input's aspect kept) or the target itself
    ('resize': the whole last stage is resized to it, the aspect changed as asked); 'double' puts base x2,
    x4 ... in between, 'direct' nothing. A single stage (the base) means nothing to upscale."""
    if fit not in UPSCALE_FITS:
        raise ValueError(f"fit {fit!r} is not one of {UPSCALE_FITS}")
    base = nearest_bucket(input_size, native)
    content = cover_size(input_size, target) if fit == "crop" else target
    return doubling_stages(base, last_stage_for(content, base, native), rule)
