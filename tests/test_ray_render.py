"""Renders on Ray workers through the CLI and the driver: same image as one rank; a dead worker fails
the render with its name and leaves Ray clean."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402  (a hard dependency: never skipped)

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

from freescale.cli import commands as cli  # noqa: E402
from freescale.cluster.ray.worker_pool import WorkerLost  # noqa: E402
from freescale.config.render_config import build_config  # noqa: E402
from freescale.progress import Progress  # noqa: E402
from freescale.rendering import renderer as driver  # noqa: E402

ARGS = ["a lighthouse", "--scale", "4", "--steps", "4", "--seed", "3", "--quiet"]


def test_two_ray_workers_give_the_one_rank_image(tmp_path):
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    assert cli.main(["render", *ARGS, "-o", str(one)]) == 0
    assert cli.main(["render", *ARGS, "-o", str(two), "--workers", "2", "--save-stages"]) == 0
    assert not ray.is_initialized(), "the embedded Ray the render started must be shut down"
    a = np.asarray(Image.open(one)).astype(int)
    b = np.asarray(Image.open(two)).astype(int)
    assert a.shape == b.shape == (512, 512, 3)
    assert np.abs(a - b).max() <= 1
    assert (tmp_path / "two.stage1-256x256.png").exists()


def dies_on_rank_one(state, config, cfg_parallel=False, resume=None, stages=None, quiet=False, **chunks):
    """render_on_rank, except that rank 1 dies in the middle of the second stage."""
    calls = []

    def count(module, args, kwargs):
        calls.append(1)
        if state.rank == 1 and len(calls) == 2:
            os._exit(1)

    state.model.pipe.unet.register_forward_pre_hook(count, with_kwargs=True)
    from freescale.rendering.rank_render import render_on_rank

    return render_on_rank(state, config, cfg_parallel, resume, stages, quiet, **chunks)


def test_dead_worker_fails_the_render_by_name(tmp_path, monkeypatch):
    config = build_config({"prompt": "a fox", "scale": 4, "steps": 4, "output": str(tmp_path / "o.png")}, 128)
    monkeypatch.setattr(driver, "render_on_rank", dies_on_rank_one)
    with pytest.raises(WorkerLost) as info:
        with driver.Renderer(config, driver.Placement(workers=2), Progress(quiet=True)) as renderer:
            renderer.render_to_files(config)
    assert info.value.rank == 1
    assert "worker rank 1" in str(info.value) and "died" in str(info.value)
    assert not ray.is_initialized()
    assert not (tmp_path / "o.png").exists()


def test_a_long_video_on_two_ray_workers_is_the_one_rank_video(tmp_path):
    """A clip longer than its chunks and its windows: chunks (0, 3) (2, 5), windows of 2 in each."""
    from freescale.inputs.video_reader import iter_frames, read_video_info

    args = ["video", "a koi pond", "--frames", "5", "--chunk-frames", "3", "--chunk-overlap", "1"]
    args += ["--window", "2", "--window-stride", "1", "--steps", "3", "--seed", "3", "--guidance", "1"]
    args += ["--quiet"]
    one, two = str(tmp_path / "one.mkv"), str(tmp_path / "two.mkv")
    assert cli.main([*args, "-o", one]) == 0
    assert cli.main([*args, "-o", two, "--workers", "2"]) == 0
    a, b = ([f.pixels.astype(int) for f in iter_frames(read_video_info(p))] for p in (one, two))
    assert len(a) == len(b) == 5 and a[0].shape == (256, 256, 3)
    assert max(np.abs(x - y).max() for x, y in zip(a, b, strict=True)) <= 1
