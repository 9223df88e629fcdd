"""A batch's short jobs side by side, one per group of workers, when the cost model says that is sooner:
the choice and what it says, the same outputs as one worker, and a job failing on its ranks reported while
the rest finish."""

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402  (a hard dependency: never skipped)

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

from freescale.cli import commands as cli  # noqa: E402
from freescale.config.render_config import build_config  # noqa: E402
from freescale.errors import ConfigError  # noqa: E402
from freescale.planning.job_split import check_jobs_at_once, job_split, rounds_seconds  # noqa: E402
from freescale.planning.plan import GIB, plan_for_config  # noqa: E402


def tiny_plan(workers: int, seed: int = 0):
    config = build_config({"prompt": "a", "output": "/tmp/x.png", "scale": 2, "steps": 3, "seed": seed}, 128)
    return plan_for_config(config, workers, device="cpu")


def sdxl_plan(workers: int):
    config = build_config({"prompt": "a", "output": "/tmp/x.png", "size": "4096x4096"}, 1024)
    return plan_for_config(config, workers)


def test_many_small_jobs_go_side_by_side_and_the_plan_says_so():
    plans = [tiny_plan(2, seed) for seed in range(4)]
    split = job_split(plans)
    one = tiny_plan(1)
    assert (split.groups, split.workers_each) == (2, 1)
    assert split.seconds == pytest.approx(2 * one.total_s)  # two rounds of two jobs on one worker each
    assert split.sharded_seconds == pytest.approx(4 * plans[0].total_s)
    assert split.sharded_seconds > split.seconds
    text = split.describe(4)
    assert text.startswith("batch plan: 4 jobs side by side, 2 at a time on 1 worker each (about ")
    assert "each sharded over all 2 workers: about" in text


def test_one_job_is_sharded_and_memory_bounds_the_groups():
    alone = job_split([sdxl_plan(4)])
    assert (alone.groups, alone.workers_each) == (1, 4)
    assert alone.describe(1).startswith("batch plan: 1 jobs one after another, each on all 4 workers")
    # 4096^2 on one worker needs more than 0.3 GiB, on four less: at most two jobs at once on 8 workers.
    assert sdxl_plan(1).peak_bytes > 0.3 * GIB > sdxl_plan(4).peak_bytes
    split = job_split([sdxl_plan(8) for _ in range(8)], memory_bytes=0.3 * GIB)
    assert split.workers_each >= 4 and split.groups * split.workers_each == 8
    with pytest.raises(ConfigError, match=r"--jobs-at-once 8: job 0 needs about 0\.\d GiB per worker on 1"):
        job_split([sdxl_plan(8) for _ in range(8)], memory_bytes=0.3 * GIB, groups=8)
    assert job_split([sdxl_plan(8) for _ in range(8)], groups=2).groups == 2


def test_a_round_lasts_as_long_as_its_longest_job():
    plans = [SimpleNamespace(total_s=s) for s in (1.0, 3.0, 2.0)]
    assert (
        rounds_seconds(plans, 2) == 5.0 and rounds_seconds(plans, 1) == 6.0 and rounds_seconds(plans, 3) == 3
    )


@pytest.mark.parametrize(
    "value, workers, cfg, message",
    [("3", 4, False, "'3' must be 'auto' or a whole number dividing the 4 workers"),
     ("0", 4, False, "'0' must be"), ("two", 2, False, "'two' must be"),
     ("2", 4, True, "--jobs-at-once 2 cannot go with --cfg-parallel")],
)  # fmt: skip
def test_jobs_at_once_is_checked(value, workers, cfg, message):
    with pytest.raises(ConfigError, match=message):
        check_jobs_at_once(value, workers, cfg)


def test_jobs_at_once_values():
    assert check_jobs_at_once("auto", 4, False) is None
    assert check_jobs_at_once("2", 4, False) == 2 and check_jobs_at_once("1", 4, True) == 1


def test_bad_jobs_at_once_exits_2(tmp_path, capsys):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text('jobs:\n  - {prompt: "a red fox", output: fox.png}\n')
    assert cli.main(["batch", str(jobs), "--workers", "1", "--jobs-at-once", "2", "--quiet"]) == 2
    assert (
        "--jobs-at-once '2' must be 'auto' or a whole number dividing the 1 workers"
        in capsys.readouterr().err
    )


JOBS = """
defaults: {{scale: 2, steps: 2, seed: 3}}
jobs:
  - {{prompt: "a red fox", output: fox.png}}
  - {{prompt: "a blue bird", output: bird.png, seed: 4}}
  - {{prompt: "a koi pond", output: pond.mkv, frames: 2, codec: ffv1, guidance: 1, motion_adapter: tiny}}
  - {{prompt: "no motion", output: broken.mkv, frames: 2, codec: ffv1, motion_adapter: {adapter}}}
  - {{prompt: "an owl", output: owl.png, seed: 5}}
"""


def test_side_by_side_on_two_workers_gives_the_one_worker_outputs(tmp_path, capsys):
    """Rounds (fox, bird), (pond, broken), (owl) on two workers: the second fails on its ranks (an adapter
    whose header passes and whose weights do not load), so its jobs render again one at a time."""
    adapter = tmp_path / "broken_adapter.safetensors"
    save_file({"down_blocks.0.motion_modules.0.proj_in.weight": torch.zeros(2, 2)}, str(adapter))
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS.format(adapter=adapter))
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    assert cli.main(["batch", str(jobs), "--output-dir", str(one), "--quiet"]) == 1
    assert "batch: 4 done, 0 skipped, 1 failed" in capsys.readouterr().err
    assert cli.main(["batch", str(jobs), "--output-dir", str(two), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert "batch plan: 5 jobs side by side, 2 at a time on 1 worker each" in err, err
    assert f"side by side: batch items 0, 1 ({two / 'fox.png'}, {two / 'bird.png'})" in err
    assert f"side by side: batch item 4 ({two / 'owl.png'})" in err
    assert "side by side failed (KeyError: " in err and "rendering items 2, 3 one at a time" in err
    assert "batch: 4 done, 0 skipped, 1 failed" in err
    missing = "KeyError: 'down_blocks.0.motion_modules.0.norm.weight'"
    assert f"item 3 ({two / 'broken.mkv'}) failed: {missing}" in err
    assert not ray.is_initialized()
    for name in ("fox.png", "bird.png", "owl.png"):
        a, b = (np.asarray(Image.open(folder / name)).astype(int) for folder in (one, two))
        assert a.shape == b.shape == (256, 256, 3) and np.abs(a - b).max() <= 1, name
    from freescale.inputs.video_reader import iter_frames, read_video_info

    a, b = (
        [f.pixels.astype(int) for f in iter_frames(read_video_info(str(d / "pond.mkv")))] for d in (one, two)
    )
    assert len(a) == len(b) == 2 and max(np.abs(x - y).max() for x, y in zip(a, b, strict=True)) <= 1
    assert not (two / "broken.mkv").exists()
