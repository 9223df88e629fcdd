"""The metric of bench/temporal_consistency.py on synthetic frames (pure numpy, no rendering): an exact pan
has no warp error, the wrong shift or noise has, and flicker counts uncompensated change."""

import importlib.util
import os

import numpy as np
import pytest

from freescale.outputs.video.synthetic_clips import PAN_PIXELS_PER_FRAME, pan_frame

BENCH = os.path.join(os.path.dirname(__file__), "..", "bench", "temporal_consistency.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("temporal_consistency", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panned(frames: int, shift: int, width: int = 80, height: int = 40, seed: int = 0) -> np.ndarray:
    """Frames of one random picture moving `shift` pixels left per frame."""
    wide = np.random.default_rng(seed).integers(0, 256, (height, width + shift * frames, 3), dtype=np.uint8)
    return np.stack([wide[:, shift * t : shift * t + width] for t in range(frames)])


def test_an_exact_pan_has_no_warp_error(bench):
    frames = panned(6, 4)
    result = bench.consistency(frames, shift=4, margin=5)
    assert result["warp_mae"] == result["warp_rms"] == 0.0
    assert result["warp_mae_per_pair"] == [0.0] * 5
    assert result["flicker"] > 50  # random pixels moved: co-located ones differ a lot
    assert result["warp_to_flicker"] == 0.0
    assert (result["frames"], result["size"]) == (6, [80, 40])


def test_the_synthetic_clip_pans_the_way_the_metric_undoes(bench):
    frames = np.stack([pan_frame(t, 64, 32) for t in range(5)])
    assert bench.warp_error(frames, PAN_PIXELS_PER_FRAME, margin=4)["warp_mae"] == 0.0
    assert bench.warp_error(frames, PAN_PIXELS_PER_FRAME + 1, margin=4)["warp_mae"] > 0.5
    assert bench.warp_error(frames, 0, margin=4)["warp_mae"] == pytest.approx(bench.flicker(frames, 4))


def test_noise_and_a_wrong_shift_give_a_warp_error(bench):
    frames = panned(5, 3)
    assert bench.warp_error(frames, shift=2, margin=4)["warp_mae"] > 50
    noisy = frames.astype(np.int16) + np.random.default_rng(1).integers(-6, 7, frames.shape)
    errors = bench.warp_error(np.clip(noisy, 0, 255).astype(np.uint8), shift=3, margin=4)
    assert 2 < errors["warp_mae"] < errors["warp_rms"] < 6  # the difference of two noises of |n| <= 6
    # One bad frame shows in the two pairs that hold it.
    spoiled = frames.copy()
    spoiled[2] = 0
    per_pair = bench.warp_error(spoiled, shift=3, margin=4)["warp_mae_per_pair"]
    assert per_pair[0] == per_pair[3] == 0 and per_pair[1] > 50 and per_pair[2] > 50


def test_sixteen_bit_frames_are_measured_in_8_bit_levels(bench):
    frames = panned(3, 2)
    deep = (frames // 2).astype(np.uint16) * 257  # room for the level added below
    deep[1:] += 257  # every later frame one 8-bit level brighter
    result = bench.consistency(deep, shift=2, margin=3)
    assert result["warp_mae_per_pair"] == [1.0, 0.0]
    assert bench.flicker(np.stack([frames[0]] * 3), 3) == 0.0


def test_frames_without_an_overlap_are_refused(bench):
    with pytest.raises(ValueError, match="at least 2"):
        bench.warp_error(panned(1, 2), shift=2, margin=0)
    with pytest.raises(ValueError, match="no overlap"):
        bench.warp_error(panned(3, 2, width=20), shift=8, margin=6)
