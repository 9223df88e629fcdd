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
