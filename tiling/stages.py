"""Stage resolutions of a cascade and the per-stage scale counts n_h, n_w, n (SPEC notation)."""

from __future__ import annotations

Size = tuple[int, int]  # (height, width) in pixels


def scale_counts(stage: Size, native: int) -> tuple[int, int]:
    """(n_h, n_w) = (H // R, W // R)."""
    return (stage[0] // native, stage[1] // native)


def _round_to_64(x: float) -> int:
    return max(64, int(round(x / 64.0)) * 64)


def stages_for_target(target: Size, native: int, rule: str) -> tuple[Size, ...]:
    """Stage sizes ending at `target`: 'double' gives base, x2, x4, ... ; 'direct' gives base then target.

    The base keeps the target's aspect ratio with its longer side at the native resolution
    (R x R for square targets, the reference's base stage).
    """
    n = max(target[0] // native, target[1] // native)
    base = (_round_to_64(target[0] / n), _round_to_64(target[1] / n))
    if n == 1:
        return (target,)
    stages = [base]
    if rule == "double":
        factor = 2
        while factor < n:
            stages.append((_round_to_64(target[0] * factor / n), _round_to_64(target[1] * factor / n)))
            factor *= 2
    stages.append(target)
    return tuple(stages)


def round_up(length: int, multiple: int = 64) -> int:
    """The smallest multiple of `multiple` that is >= length."""
    return -(-length // multiple) * multiple


def input_stages(input_size: Size, target: Size, rule: str) -> tuple[Size, ...]:
    """Stages of an upscale of an input of `input_size` to `target` (both (h, w)).

    The base is the input padded up to multiples of 64 (what the UNets take). The last stage is the
    smallest 64-multiple whose part covering the input (the same fraction of it as in the base) is at least
    `target`: for a whole --scale N it is N times the base, and that part is exactly the target.
    'double' puts base x2, x4 ... in between; 'direct' goes there at once.
    """
    base = (round_up(input_size[0]), round_up(input_size[1]))
    last = tuple(max(round_up(-(-t * b // i)), b) for t, b, i in zip(target, base, input_size, strict=True))
    return doubling_stages(base, last, rule)


def doubling_stages(base: Size, last: Size, rule: str) -> tuple[Size, ...]:
    """base, then ('double') base x2, x4 ... while smaller than `last` on both sides, then `last`."""
    if last == base:
        return (base,)
    stages = [base]
    if rule == "double":
        factor = 2
        while base[0] * factor < last[0] and base[1] * factor < last[1]:
            stages.append((base[0] * factor, base[1] * factor))
            factor *= 2
    stages.append(last)
    return tuple(stages)


def input_part(input_size: Size, base: Size, stage: Size) -> Size:
    """The rows and columns of `stage` (from the top left) that show the input, the rest being the base's
    padding scaled up with it."""
    return (input_size[0] * stage[0] // base[0], input_size[1] * stage[1] // base[1])
