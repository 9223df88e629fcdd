"""The self-cascade on the built-in model: restart, blending, dilation schedule, modes, determinism."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from freescale.config.render_config import build_config
from freescale.method.cascade import Cascade, cosine_factor, restart_latents
from freescale.method.random_draws import keyed_normal


def _config(tmp_path, **values):
    base = {"prompt": "a red fox", "scale": 4, "steps": 5, "dilate_tau": 3, "output": str(tmp_path / "o.png")}
    return build_config({**base, **values}, native_size=128)


def test_cosine_factor_by_hand():
    assert cosine_factor(1000, 1000, 2.0) == pytest.approx(1.0)
    assert cosine_factor(0, 1000, 2.0) == pytest.approx(0.0)
    assert cosine_factor(500, 1000, 2.0) == pytest.approx(0.25)
    assert cosine_factor(250, 1000, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))


def test_restart_latents_follow_euler_noising(tiny_model):
    scheduler = tiny_model.pipe.scheduler
    scheduler.set_timesteps(10)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    noised = restart_latents(scheduler, x0, eps, 3)
    assert len(noised) == 7
    for i, z in enumerate(noised, start=3):
        assert torch.allclose(z, x0 + scheduler.sigmas[i] * eps, atol=1e-6)


class UNetSpy:
    """Records, per UNet call, the scheduler's step index, the input and a dilated conv's dilation."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []
        conv = dict(pipe.unet.named_modules())["mid_block.resnets.0.conv1"]
        # A UNet that a sharded render used keeps its band convs (a worker shards it once): the conv inside.
        self.conv = getattr(conv, "inner", conv)

    def __call__(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.calls.append(
            (sample.shape[-1], self.pipe.scheduler.step_index, sample.clone(), self.conv.dilation)
        )


def test_upper_stage_restarts_and_dilates_as_specified(tiny_model, tmp_path, monkeypatch):
    config = _config(tmp_path, steps=10, dilate_tau=5, scale=2)
    encoded = []
    from freescale.method import vae_transitions

    real_encode = vae_transitions.next_stage_band
    monkeypatch.setattr(
        vae_transitions, "next_stage_band", lambda *a: encoded.append(real_encode(*a)) or encoded[-1]
    )
    spy = UNetSpy(tiny_model.pipe)
    handle = tiny_model.pipe.unet.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        Cascade(tiny_model, config).run()
    finally:
        handle.remove()
    base = [c for c in spy.calls if c[0] == 16]
    upper = [c for c in spy.calls if c[0] == 32]
    assert [c[1] for c in base] == list(range(10)) and all(c[3] == (1, 1) for c in base)
    # Restart at int(0.3 * 10) = 3: the scheduler's index is the true step index from the first call on.
    assert [c[1] for c in upper] == list(range(3, 10))
    assert [c[3] for c in upper] == [(2, 2)] * 2 + [(1, 1)] * 5  # i < dilate_tau = 5
    # The first blended latent is z_restart mixed with itself, i.e. z_restart (SPEC 2.5-2.6).
    scheduler = tiny_model.pipe.scheduler
    x0 = encoded[0]
    eps = keyed_normal(tuple(x0.shape), config.seed, "restart-noise", 1)
    z_restart = x0 + scheduler.sigmas[3] * eps
    c = cosine_factor(scheduler.timesteps[3], 1000, config.cosine_scale)
    expected = (z_restart * (1 - c) + z_restart * c) / ((scheduler.sigmas[3] ** 2 + 1) ** 0.5)
    assert torch.allclose(upper[0][2][1:], expected, atol=1e-5)


@pytest.fixture(scope="module")
def renders(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("renders")
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[:, :20] = 200
    Image.fromarray(mask).save(tmp / "mask.png")
    Image.fromarray(np.full((128, 128, 3), 90, dtype=np.uint8)).save(tmp / "base.png")
    variants = {
        "normal": {},
        "again": {},
        "fast": {"fast_mode": True},
        "mask": {"mask": str(tmp / "mask.png"), "cosine_scale": 3.0, "cosine_scale_bg": 0.5},
        "image": {"image": str(tmp / "base.png")},
        "other_seed": {"seed": 1},
    }
    return {name: Cascade(tiny_model, _config(tmp, **v)).run() for name, v in variants.items()}, tmp


def test_three_stages_and_determinism(renders):
    results, _ = renders
    normal = results["normal"]
    assert [tuple(r.shape) for r in normal] == [(1, 4, 16, 16), (1, 4, 32, 32), (1, 4, 64, 64)]
    assert all(torch.isfinite(r).all() for r in normal)
    for a, b in zip(normal, results["again"], strict=True):
        assert torch.equal(a, b)
    assert not torch.allclose(normal[-1], results["other_seed"][-1])


def test_fast_mode_changes_only_upper_stages(renders):
    results, _ = renders
    assert torch.equal(results["fast"][0], results["normal"][0])
    assert not torch.allclose(results["fast"][-1], results["normal"][-1])
    assert torch.isfinite(results["fast"][-1]).all()


def test_mask_splits_the_exponent(renders, tiny_model, tmp_path):
    results, tmp = renders
    masked = results["mask"][-1]
    fg = Cascade(tiny_model, _config(tmp_path, cosine_scale=3.0)).run()[-1]
    bg = Cascade(tiny_model, _config(tmp_path, cosine_scale=0.5)).run()[-1]
    assert not torch.allclose(masked, fg) and not torch.allclose(masked, bg)
    # Full masks reduce detail control to the plain exponents.
    Image.fromarray(np.full((10, 10), 255, dtype=np.uint8)).save(tmp_path / "full.png")
    full = _config(tmp_path, mask=str(tmp_path / "full.png"), cosine_scale=3.0, cosine_scale_bg=0.5)
    assert torch.equal(Cascade(tiny_model, full).run()[-1], fg)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(tmp_path / "empty.png")
    empty = _config(tmp_path, mask=str(tmp_path / "empty.png"), cosine_scale=3.0, cosine_scale_bg=0.5)
    assert torch.equal(Cascade(tiny_model, empty).run()[-1], bg)


def test_image_to_image_replaces_the_base_stage(renders, tiny_model):
    results, tmp = renders
    from freescale.method import vae_transitions
    from freescale.method.random_draws import keyed_generator

    with Image.open(tmp / "base.png") as image:
        pixels = vae_transitions.from_pil(image, "cpu", torch.float32)
    vae = tiny_model.pipe.vae
    vae.enable_tiling()
    posterior = vae.encode(pixels).latent_dist
    expected = posterior.sample(generator=keyed_generator(0, "vae-sample", 0)) * vae.config.scaling_factor
    assert torch.equal(results["image"][0], expected)
    assert len(results["image"]) == 3 and not torch.allclose(results["image"][-1], results["normal"][-1])
