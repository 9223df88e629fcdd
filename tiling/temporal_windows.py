"""Temporal context windows over a clip's frames (FreeNoise): where the windows start, which frames each one
writes, their per-frame weights, and the shuffled repetition of the first window's noise. Pure integers."""

from __future__ import annotations

from collections.abc import Callable

Window = tuple[int, int]  # frames [start, end)
WINDOW_WEIGHTS = ("pyramid", "flat")


def temporal_windows(frames: int, window: int, stride: int) -> list[Window]:
    """Windows of `window` frames every `stride` frames while they fit, then a tail window ending at the
    last frame when the last regular one does not; one window of all frames when the clip fits in one."""
    if frames <= window:
        return [(0, frames)]
    windows = [(start, start + window) for start in range(0, frames - window + 1, stride)]
    if windows[-1][1] != frames:
        windows.append((frames - window, frames))
    return windows


def written_frames(frames: int, window: int, stride: int) -> list[Window]:
    """The frames each of `temporal_windows`' windows is averaged into: all of its own, except that the
    tail window writes only the frames no regular window reached (as diffusers' FreeNoise blocks do)."""
    windows = temporal_windows(frames, window, stride)
    regular = [(0, frames)] if frames <= window else list(range(0, frames - window + 1, stride))
    if len(windows) > len(regular):
        return windows[:-1] + [(windows[-2][1], frames)]
    return windows


def window_weights(length: int, scheme: str) -> list[float]:
    """The weight of each frame of a window: 'flat' all 1; 'pyramid' 1, 2, ... up to the middle and back
    down (4 frames: 1 2 2 1; 5 frames: 1 2 3 2 1)."""
    if scheme == "flat":
        return [1.0] * length
    if scheme == "pyramid":
        rising = [float(i) for i in range(1, (length + 1) // 2 + 1)]
        falling = rising[: length // 2][::-1]
        return rising + falling
    raise ValueError(f"window weights {scheme!r}: allowed are {', '.join(WINDOW_WEIGHTS)}")


def shuffled_noise_sources(
    frames: int, window: int, stride: int, permutation: Callable[[int], list[int]]
) -> list[int]:
    """For each frame, the frame of the first window whose noise it repeats (FreeNoise's shuffled
    repetition): from frame `window` on, each run of `stride` frames is a shuffle (`permutation(n)`, a
    permutation of range(n)) of the run `window` frames earlier; frames of the first window are their own."""
    source = list(range(frames))
    for start in range(window, frames, stride):
        earlier = list(range(start - window, min(frames, start - window + stride)))
        order = permutation(len(earlier))
        run = [source[earlier[k]] for k in order][: frames - start]
        source[start : start + len(run)] = run
    return source
