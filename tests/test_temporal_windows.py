"""Temporal context windows (FreeNoise) on the motion UNet: the window geometry, the shuffled noise, and
the numbers against diffusers' own FreeNoise blocks and pipeline, without and with FreeScale on top."""

import contextlib
import types

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffPipeline
from diffusers.models.attention import FreeNoiseTransformerBlock
from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

from freescale.cli.commands import main
from freescale.config.render_config import build_config
from freescale.method import cascade
from freescale.method.random_draws import clip_noise
from freescale.method.temporal_windows import WindowedTemporalBlock, WindowSettings, temporal_windows_applied
from freescale.models.loading import load_model, resolve_model_source
from freescale.models.motion_adapter import build_tiny_motion_adapter, motion_unet
from freescale.tiling.temporal_windows import (
    shuffled_noise_sources,
    temporal_windows,
    window_weights,
    written_frames,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def sd15():
    torch.set_num_threads(2)
    model = load_model(resolve_model_source("tiny-sd15"), device="cpu")
    return model, motion_unet(model, build_tiny_motion_adapter("sd15"))


def _free_noise_namespace(window: int, stride: int, weights: str, noise: str = "random"):
    """What diffusers' FreeNoise mixin reads from its pipeline, to call its methods on a bare UNet."""
    return types.SimpleNamespace(
        _free_noise_context_length=window, _free_noise_context_stride=stride,
        _free_noise_weighting_scheme=weights, _free_noise_noise_type=noise, device=CPU, dtype=torch.float32,
        vae_scale_factor=8,
    )  # fmt: skip


@contextlib.contextmanager
def diffusers_free_noise(unet, settings: WindowSettings):
    """diffusers' FreeNoiseTransformerBlocks swapped into the motion modules, the originals back on exit."""
    modules = [m for block in _motion_blocks(unet) for m in block.motion_modules]
    saved = [list(m.transformer_blocks) for m in modules]
    namespace = _free_noise_namespace(settings.window, settings.stride, settings.weights)
    for block in _motion_blocks(unet):
        AnimateDiffFreeNoiseMixin._enable_free_noise_in_block(namespace, block)
    try:
        yield
    finally:
        for module, blocks in zip(modules, saved, strict=True):
            for index, block in enumerate(blocks):
                module.transformer_blocks[index] = block


def _motion_blocks(unet):
    mid = [unet.mid_block] if hasattr(unet.mid_block, "motion_modules") else []
    return [*unet.down_blocks, *mid, *unet.up_blocks]


def test_window_geometry():
    assert temporal_windows(16, 16, 4) == [(0, 16)] and temporal_windows(5, 16, 4) == [(0, 5)]
    assert temporal_windows(24, 16, 4) == [(0, 16), (4, 20), (8, 24)]
    assert temporal_windows(25, 16, 4) == [(0, 16), (4, 20), (8, 24), (9, 25)]  # the tail ends at the last
    assert written_frames(25, 16, 4) == [(0, 16), (4, 20), (8, 24), (24, 25)]
    assert written_frames(24, 16, 4) == temporal_windows(24, 16, 4)
    for frames in range(1, 40):
        windows = temporal_windows(frames, 8, 3)
        assert all(end - start == min(8, frames) for start, end in windows)
        assert {f for a, b in written_frames(frames, 8, 3) for f in range(a, b)} == set(range(frames))
    assert window_weights(4, "pyramid") == [1, 2, 2, 1] and window_weights(5, "pyramid") == [1, 2, 3, 2, 1]
    assert window_weights(3, "flat") == [1, 1, 1]
    with pytest.raises(ValueError, match="allowed are pyramid, flat"):
        window_weights(4, "cosine")


@pytest.mark.parametrize("frames, window, stride", [(24, 16, 4), (19, 8, 3), (9, 4, 4), (30, 16, 5)])
def test_shuffled_noise_is_diffusers_free_noise_shuffle(frames, window, stride):
    """The same draws give diffusers' shuffle_context latents: the first window's noise, repeated in
    shuffles run by run."""
    shape = (1, 2, frames, 3, 3)
    namespace = _free_noise_namespace(window, stride, "pyramid", noise="shuffle_context")
    expected = AnimateDiffFreeNoiseMixin._prepare_latents_free_noise(
        namespace, 1, 2, frames, 24, 24, torch.float32, CPU, torch.Generator().manual_seed(7)
    )
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(shape, generator=generator)
    sources = shuffled_noise_sources(
        frames, window, stride, lambda n: torch.randperm(n, generator=generator).tolist()
    )
    assert torch.equal(noise[:, :, sources], expected)
    assert sources[:window] == list(range(window)) and set(sources) <= set(range(window))


def test_keyed_clip_noise_is_the_same_in_every_chunk():
    """A frame's noise is its own keyed draw: the same whichever range of frames (chunk) asks for it, and
    with shuffle a repetition of a first-window frame's."""
    shape = (1, 2, 2, 2)
    whole = clip_noise(shape, range(21), 5, "initial", 0)
    assert torch.equal(clip_noise(shape, range(6, 15), 5, "initial", 0), whole[:, :, 6:15])
    shuffled = clip_noise(shape, range(21), 5, "initial", 0, shuffle=(8, 4))
    assert torch.equal(clip_noise(shape, range(9, 21), 5, "initial", 0, shuffle=(8, 4)), shuffled[:, :, 9:])
    assert torch.equal(shuffled[:, :, :8], whole[:, :, :8])
    assert not torch.equal(shuffled, clip_noise(shape, range(21), 6, "initial", 0, shuffle=(8, 4)))
    firsts = {tuple(shuffled[0, :, f].flatten().tolist()) for f in range(8)}
    assert all(tuple(shuffled[0, :, f].flatten().tolist()) in firsts for f in range(21))
    assert not torch.equal(shuffled[:, :, 8:12], whole[:, :, 8:12])


@pytest.mark.parametrize("frames, weights", [(12, "pyramid"), (14, "flat"), (12, "flat")])
def test_motion_unet_equals_diffusers_free_noise_blocks(sd15, frames, weights):
    _, unet = sd15
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, frames, 16, 16, generator=generator)
    text = torch.randn(frames, 77, unet.config.cross_attention_dim, generator=generator)
    settings = WindowSettings(8, 4, weights)
    with torch.inference_mode():
        plain = unet(sample, 500, encoder_hidden_states=text).sample
        with temporal_windows_applied(unet, settings):
            assert sum(isinstance(m, WindowedTemporalBlock) for m in unet.modules()) > 0
            ours = unet(sample, 500, encoder_hidden_states=text).sample
        assert not any(isinstance(m, WindowedTemporalBlock) for m in unet.modules())  # put back
        with diffusers_free_noise(unet, settings):
            assert any(isinstance(m, FreeNoiseTransformerBlock) for m in unet.modules())
            theirs = unet(sample, 500, encoder_hidden_states=text).sample
        assert torch.equal(unet(sample, 500, encoder_hidden_states=text).sample, plain)
    assert torch.equal(ours, theirs)
    assert (ours - plain).abs().max() > 1e-2  # the windows act


def test_the_tail_window_alone_writes_the_last_frames(sd15):
    """Frames only the tail window reaches take its result as is. (diffusers' blocks divide them by the
    weight of the tail's first such frame instead of each frame's own, which scales them with pyramid
    weights; flat weights hide it, so that case is compared with diffusers above.)"""
    _, unet = sd15
    block = next(
        m for m in unet.modules() if type(m).__name__ == "AnimateDiffTransformer3D"
    ).transformer_blocks[0]
    hidden = torch.randn(6, 14, block.norm1.normalized_shape[0], generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        windowed = WindowedTemporalBlock(block, WindowSettings(8, 4, "pyramid"))(hidden)
        tail = block(hidden[:, 6:14])
        first = block(hidden[:, 0:8])
    assert torch.allclose(windowed[:, 12:], tail[:, 6:], atol=1e-6, rtol=0)
    assert torch.allclose(windowed[:, :4], first[:, :4], atol=1e-6, rtol=0)  # only the first window there
    assert not torch.allclose(windowed[:, 4:8], first[:, 4:8], atol=1e-3)  # averaged with the second


def test_animatediff_pipeline_equals_diffusers_free_noise(sd15):
    """A whole AnimateDiff pipeline run (no FreeScale): diffusers' enable_free_noise against our windows.
    Within 1e-4: diffusers' FreeNoise encodes the prompt per frame by interpolation, which moves the text
    states by ~2e-7 (the UNets agree exactly, above)."""
    model, _ = sd15
    p = model.pipe
    adapter = build_tiny_motion_adapter("sd15")
    parts = dict(vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, scheduler=p.scheduler)
    pipe = AnimateDiffPipeline(unet=p.unet, motion_adapter=adapter, **parts)
    pipe.set_progress_bar_config(disable=True)
    frames = 12
    latents = torch.randn(1, 4, frames, 16, 16, generator=torch.Generator().manual_seed(0))
    call = dict(prompt="a koi pond", num_frames=frames, height=128, width=128, num_inference_steps=3,
                guidance_scale=7.5, output_type="latent")  # fmt: skip
    with torch.inference_mode():
        with temporal_windows_applied(pipe.unet, WindowSettings(8, 4, "pyramid")):
            ours = pipe(**call, latents=latents.clone()).frames
        pipe.enable_free_noise(
            context_length=8, context_stride=4, weighting_scheme="pyramid", noise_type="random"
        )
        theirs = pipe(**call, latents=latents.clone()).frames
        pipe.disable_free_noise()
        plain = pipe(**call, latents=latents.clone()).frames
    assert (ours - theirs).abs().max() <= 1e-4
    assert (ours - plain).abs().max() > 0.1


def test_freescale_with_windows_equals_freescale_on_diffusers_blocks(sd15, tmp_path, monkeypatch):
    """A whole FreeScale video render (base and a 2x stage) with windows, against the same render with
    diffusers' FreeNoise blocks in the motion UNet instead: the same latents."""
    from freescale.cluster.sharding.shard_group import ShardGroup
    from freescale.progress import Progress
    from freescale.rendering.rank_render import RenderResume, render_latents

    model, unet = sd15
    values = {"prompt": "a fox", "model": "tiny-sd15", "motion_adapter": "tiny", "frames": 9, "window": 8,
              "window_stride": 4, "window_weights": "flat", "steps": 2, "dilate_tau": 1, "guidance": 1.0,
              "scale": 2, "output": str(tmp_path / "o.mkv")}  # fmt: skip
    config = build_config(values, native_size=128)

    def render():
        return render_latents(
            model, ShardGroup.single(), config, Progress(quiet=True), False, RenderResume(), unet
        )

    ours = render()
    monkeypatch.setattr(cascade, "temporal_windows_applied", diffusers_free_noise)
    theirs = render()
    assert len(ours) == 2 and ours[1].shape == (1, 4, 9, 32, 32)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_a_clip_longer_than_the_window(tmp_path):
    from test_video_render import frames_of

    out = str(tmp_path / "long.mkv")
    fast = ["--steps", "2", "--dilate-tau", "1", "--quiet", "--seed", "4"]
    args = ["video", "a fox", "--frames", "7", "--window", "4", "--window-stride", "2", "-o", out]
    assert main(args + fast + ["--noise", "shuffle"]) == 0
    shuffled = frames_of(out)
    assert shuffled.shape[0] == 7
    assert main(args + fast + ["--overwrite"]) == 0
    assert not np.array_equal(frames_of(out), shuffled)  # --noise random draws other noise for frames 4-6
