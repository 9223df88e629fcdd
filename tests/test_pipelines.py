"""The diffusers-style pipelines: called like StableDiffusionXLPipeline, the same image as the CLI for the
same seed, every stage returned, the user's own pipeline (and its scheduler) used as given."""

import numpy as np
import pytest
import torch
from PIL import Image

import freescale
from freescale.cli import commands as cli
from freescale.errors import ConfigError
from freescale.models.loading import builtin_pipeline, save_tiny_model

ARGS = {"num_inference_steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_tiny_model(str(folder))
    return folder


def test_the_pipeline_gives_the_cli_image(tiny_dir, tmp_path):
    pipe = freescale.FreeScaleXLPipeline.from_pretrained(str(tiny_dir), device="cpu")
    out = pipe("a lighthouse", height=256, width=256, stages=[128, 256], **ARGS)
    assert [im.size for stage in out.stage_images for im in stage] == [(128, 128), (256, 256)]
    assert out.images == out.stage_images[-1] and len(out.images) == 1
    path = tmp_path / "cli.png"
    argv = ["render", "a lighthouse", "--model", str(tiny_dir), "--size", "256x256", "--steps", "2"]
    assert cli.main([*argv, "--seed", "3", "--quiet", "-o", str(path)]) == 0
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(Image.open(path).convert("RGB")))
    # A generator stands for its initial seed; np is the same image in [0, 1] floats, latent its latents.
    again = pipe("a lighthouse", height=256, width=256, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(3), output_type="np")  # fmt: skip
    floats = again.images[0]
    assert (
        floats.dtype == np.float32
        and floats.shape == (256, 256, 3)
        and 0 <= floats.min() <= floats.max() <= 1
    )
    assert np.abs(np.round(floats * 255) - np.asarray(out.images[0])).max() <= 1
    latents = pipe("a lighthouse", height=256, width=256, output_type="latent", **ARGS).images[0]
    assert tuple(latents.shape) == (1, 4, 32, 32)


def test_from_pipe_uses_the_users_pipeline_as_given_and_calls_back_each_step():
    from diffusers import DDIMScheduler

    users = builtin_pipeline("tiny")
    pipe = freescale.FreeScaleXLPipeline.from_pipe(users)
    assert pipe.pipe is users
    calls = []
    first = pipe("a fox", callback_on_step_end=lambda p, i, t, kw: calls.append((kw["stage"], i, int(t))),
                 cosine_scale=1.0, **ARGS).images[0]  # fmt: skip
    # Two stages (--scale 2): the base's two steps, then the upper stage's from its restart step.
    assert [c[:2] for c in calls] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    euler = [int(t) for t in users.scheduler.timesteps]
    assert [c[2] for c in calls] == [euler[0], euler[1], euler[0], euler[1]]
    users.scheduler = DDIMScheduler.from_config(users.scheduler.config)
    second = pipe("a fox", cosine_scale=1.0, **ARGS).images[0]
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert not np.array_equal(np.asarray(first), np.asarray(second))
    # --scheduler's sampler, by its option name: the callback's timesteps are that sampler's.
    calls.clear()
    pipe("a fox", scheduler="dpm++2m-karras", callback_on_step_end=lambda p, i, t, kw: calls.append(float(t)),
         **ARGS)  # fmt: skip
    assert len(calls) == 4 and calls[0] > calls[1]


def test_the_sd15_pipeline_and_what_each_refuses():
    sd15 = freescale.FreeScalePipeline.from_pipe(builtin_pipeline("tiny-sd15"))
    out = sd15(["a fox", "an owl"], **ARGS)
    assert len(out.images) == 2 and out.images[0].size == out.images[1].size
    assert not np.array_equal(np.asarray(out.images[0]), np.asarray(out.images[1]))
    with pytest.raises(TypeError, match="takes a StableDiffusionXLPipeline, not StableDiffusionPipeline"):
        freescale.FreeScaleXLPipeline.from_pipe(builtin_pipeline("tiny-sd15"))
    with pytest.raises(ConfigError, match="is a Stable Diffusion XL model; FreeScalePipeline takes"):
        freescale.FreeScalePipeline.from_pretrained("tiny")
    with pytest.raises(ConfigError, match="unknown key 'cosine_scal'"):
        sd15("a fox", cosine_scal=1.0)
    with pytest.raises(ConfigError, match="output_type 'pt' is not one of pil, np, latent"):
        sd15("a fox", output_type="pt")
    with pytest.raises(ConfigError, match="height and width together"):
        sd15("a fox", height=512)
