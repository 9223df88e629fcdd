"""Every --scheduler on any number of ranks: a band's step equals its rows of the whole latent's step
(stochastic samplers draw the whole tensor's noise, keyed), and sharded renders equal one rank."""

import dataclasses

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from freescale.cli import commands as cli
from freescale.cluster.sharding.local_ranks import run_ranks
from freescale.cluster.sharding.rank_state import RankState
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.config.presets import load_preset
from freescale.config.render_config import build_config
from freescale.errors import ConfigError
from freescale.method.band_sampler import (
    PlainStep,
    StepDraw,
    VarianceNoiseStep,
    WholeTensorNoiseStep,
    band_step,
)
from freescale.method.cascade import denoise, restart_latents
from freescale.method.random_draws import keyed_generator
from freescale.models.schedulers import SCHEDULER_NAMES, build_scheduler, scheduler_class_name
from freescale.models.tiny_parts import tiny_scheduler

STEPS, FIRST = 6, 1
BANDS = ((0, 4), (4, 12), (12, 16))  # three ranks' rows of a 16-row latent, unequal as bands may be


def _schedulers(name: str, count: int) -> list:
    """One scheduler per rank, as every rank builds its own."""
    return [build_scheduler(name, tiny_scheduler()) for _ in range(count)]


def _render_on_bands(schedulers: list, x0: torch.Tensor, eps: torch.Tensor, world: int) -> torch.Tensor:
    """The upper-stage loop (restart, cosine blend, steps FIRST..) on each band, with a prediction that is
    elementwise in the latents as the UNet is not, so that only the sampler is compared."""
    field = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    bands = BANDS if world > 1 else ((0, x0.shape[-2]),)
    out = []
    for scheduler, (a, b) in zip(schedulers, bands, strict=True):
        scheduler.set_timesteps(STEPS)
        noised = restart_latents(scheduler, x0[..., a:b, :], eps[..., a:b, :], FIRST)

        def predict(latents, t, a=a, b=b, scheduler=scheduler):
            return torch.tanh(scheduler.scale_model_input(latents, t)) * 0.5 + field[..., a:b, :]

        def before(i, latents, noised=noised):
            return latents * 0.75 + noised[i - FIRST] * 0.25

        step = band_step(scheduler, world)
        out.append(denoise(scheduler, predict, noised[0], FIRST, 11, 1, before, None, step, (a, b, 16)))
    return torch.cat(out, dim=-2)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_a_band_steps_as_its_rows_of_the_whole_latent(name):
    x0 = torch.randn(1, 4, 16, 8, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 4, 16, 8, generator=torch.Generator().manual_seed(2))
    whole = _render_on_bands(_schedulers(name, 1), x0, eps, world=1)
    banded = _render_on_bands(_schedulers(name, len(BANDS)), x0, eps, world=len(BANDS))
    assert torch.isfinite(whole).all() and whole.abs().max() > 0.1
    # Elementwise arithmetic on the same values: not a tolerance, the same numbers.
    assert torch.equal(banded, whole), name


def test_the_samplers_are_those_named_and_differ():
    built = {name: build_scheduler(name, tiny_scheduler()) for name in SCHEDULER_NAMES}
    assert {n: type(s).__name__ for n, s in built.items()} == {
        "euler": "EulerDiscreteScheduler", "euler-a": "EulerAncestralDiscreteScheduler",
        "dpm++2m": "DPMSolverMultistepScheduler", "dpm++2m-karras": "DPMSolverMultistepScheduler",
        "ddim": "DDIMScheduler", "unipc": "UniPCMultistepScheduler",
    }  # fmt: skip
    assert built["dpm++2m-karras"].config.use_karras_sigmas and not built["dpm++2m"].config.use_karras_sigmas
    dpm = built["dpm++2m"].config
    assert dpm.algorithm_type == "dpmsolver++" and dpm.solver_order == 2
    assert not built["ddim"].config.clip_sample  # latents are not clipped to [-1, 1]
    # The model's schedule carries over; the model's own scheduler is kept as it is without a name.
    assert all(s.config.timestep_spacing == "leading" and s.config.steps_offset == 1 for s in built.values())
    own = tiny_scheduler()
    assert build_scheduler(None, own) is own
    kinds = {n: type(band_step(s, 2)) for n, s in built.items()}
    assert kinds == {n: WholeTensorNoiseStep if n == "euler-a" else PlainStep for n in SCHEDULER_NAMES}


def test_restart_noise_is_at_each_steps_own_sigma_even_where_karras_timesteps_repeat():
    scheduler = build_scheduler("dpm++2m-karras", tiny_scheduler())
    scheduler.set_timesteps(50)
    timesteps = scheduler.timesteps.tolist()
    repeated = [i for i in range(1, 50) if timesteps[i] == timesteps[i - 1]]
    assert repeated  # the case this guards: add_noise by timestep value would take a neighbour's sigma
    x0, eps = torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)
    noised = restart_latents(scheduler, x0, eps, 15)
    for i in range(15, 50):
        alpha, sigma = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[i])
        assert torch.allclose(noised[i - 15], alpha * x0 + sigma * eps, rtol=1e-6), i


def test_sde_noise_comes_whole_and_keyed():
    """DPM-Solver's SDE variants take the band of the whole latent's keyed draw, as one rank draws it."""

    def make():
        config = tiny_scheduler().config
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="sde-dpmsolver++")

    x0 = torch.randn(1, 4, 16, 8, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 4, 16, 8, generator=torch.Generator().manual_seed(2))
    assert isinstance(band_step(make(), 2), VarianceNoiseStep)
    whole = _render_on_bands([make()], x0, eps, world=1)
    assert torch.equal(_render_on_bands([make() for _ in BANDS], x0, eps, world=len(BANDS)), whole)
    # On one rank it is the draw diffusers itself makes with the keyed generator.
    own, ours = make(), make()
    for s in (own, ours):
        s.set_timesteps(STEPS)
    t, latents = own.timesteps[0], torch.randn(1, 4, 16, 8)
    by_diffusers = own.step(eps, t, latents, generator=keyed_generator(5, "sampler", 1, 0), return_dict=False)
    assert torch.equal(band_step(ours, 1)(eps, t, latents, StepDraw(5, 1, 0, (0, 16), 16)), by_diffusers[0])


def test_samplers_that_would_differ_sharded_are_refused_on_more_than_one_rank():
    config = tiny_scheduler().config
    thresholding = DDIMScheduler.from_config(config, thresholding=True)
    unknown = DDPMScheduler.from_config(config)  # a stochastic sampler it does not know
    for scheduler, message in ((thresholding, "dynamic thresholding"), (unknown, "DDPMScheduler")):
        assert isinstance(band_step(scheduler, 1), PlainStep)  # one rank steps it as diffusers does
        with pytest.raises(ConfigError, match=message):
            band_step(scheduler, 2)


def test_multistep_samplers_checkpoint_only_at_stage_ends(tiny_model):
    """dpm++2m and unipc keep earlier predictions, which a checkpoint does not hold: no mid-stage ones."""
    from freescale.method.cascade import Cascade

    for name in SCHEDULER_NAMES:
        config = build_config({"prompt": "x", "scheduler": name}, 128)
        cascade = Cascade(tiny_model, config, checkpoint_every=2)
        assert type(cascade.scheduler).__name__ == scheduler_class_name(name)
        assert cascade.scheduler is not tiny_model.pipe.scheduler  # the model's own stays as it is
        assert (cascade.checkpoint_every is None) == (name in ("dpm++2m", "dpm++2m-karras", "unipc")), name


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr("freescale.models.loading.load_model", refuse)


def test_a_bad_scheduler_name_exits_2_with_one_line_naming_the_allowed(no_loading, capsys, tmp_path):
    assert cli.main(["render", "x", "--scheduler", "heun", "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    allowed = "euler, euler-a, dpm++2m, dpm++2m-karras, ddim, unipc"
    assert err == f"freescale: error: --scheduler 'heun' is not one of {allowed}"
    preset = tmp_path / "p.yaml"
    preset.write_text("scheduler: dpm\n")
    assert cli.main(["render", "x", "--preset", str(preset), "-o", str(tmp_path / "o.png")]) == 2
    assert "--scheduler 'dpm' is not one of" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_the_scheduler_is_a_recorded_setting():
    args = cli.build_parser().parse_args(["render", "x", "--scheduler", "unipc"])
    assert args.scheduler == "unipc"
    config = build_config({"prompt": "x", "scheduler": "unipc"}, 128)
    assert dataclasses.asdict(config)["scheduler"] == "unipc"  # recipes and checkpoints store asdict
    assert build_config({"prompt": "x"}, 128).scheduler is None  # the model's own


# Two-stage tiny SDXL renders: base 64 px, the upper stage at the native 128 (16 latent rows, two bands).
SMALL = {"prompt": "a red fox", "stages": "64,128", "steps": 4, "dilate_tau": 2, "seed": 7, "guidance": 0.0}


def _turbo() -> dict:
    """The turbo preset's sampling (4 steps, no guidance, restart 0.5) at the small size, with euler-a."""
    preset = {k: v for k, v in load_preset("turbo").items() if k not in ("scale", "stage_rule")}
    return {**SMALL, **preset, "scheduler": "euler-a"}


# Every name; euler-a with the turbo preset's settings (SDXL-Turbo's own sampler is ancestral Euler).
VARIANTS = {name: {**SMALL, "scheduler": name} for name in SCHEDULER_NAMES} | {"euler-a": _turbo()}


def render_samplers(group, output: str) -> dict:
    from freescale.models.loading import load_model, resolve_model_source
    from freescale.rendering.rank_render import render_on_rank

    model = load_model(resolve_model_source("tiny"), device="cpu")
    state = RankState(group.rank, group.world, group, model, model.device)
    return {
        name: render_on_rank(state, build_config({**values, "output": output}, native_size=128))["latents"]
        for name, values in VARIANTS.items()
    }


def test_every_sampler_sharded_over_two_ranks_equals_one_rank(tmp_path):
    torch.set_num_threads(2)
    output = str(tmp_path / "o.png")
    assert VARIANTS["euler-a"]["steps"] == 4 and VARIANTS["euler-a"]["restart"] == 0.5
    reference = render_samplers(ShardGroup.single(), output)
    ranks = run_ranks(2, render_samplers, output)
    # The names are different samplers (DDIM is Euler's method in other variables: close to euler).
    pairs = (("euler", "dpm++2m"), ("dpm++2m", "dpm++2m-karras"), ("euler", "unipc"))
    for a, b in pairs:
        assert (reference[a][-1] - reference[b][-1]).abs().max() > 1e-2, (a, b)
    for name in VARIANTS:
        for expected, got in zip(reference[name], ranks[0][name], strict=True):
            assert expected.shape == got.shape
            assert (expected - got).abs().max() <= 1e-4, name  # the sharded renders' tolerance
