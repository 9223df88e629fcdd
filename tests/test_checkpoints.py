"""Checkpoints and resume: a render stopped mid-stage (driver stopped, or a worker killed) continues
from its last checkpoint to exactly the image of an uninterrupted render."""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

from freescale.cli import commands as cli  # noqa: E402
from freescale.outputs.checkpoints import CheckpointDir  # noqa: E402
from freescale.rendering import in_process_pool  # noqa: E402
from freescale.rendering import renderer as driver  # noqa: E402
from freescale.rendering.rank_render import render_on_rank  # noqa: E402

ARGS = ["a lighthouse", "--scale", "4", "--steps", "4", "--seed", "5", "--quiet"]


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image).copy()


class Stop(Exception):
    pass


def test_checkpoints_leave_the_image_unchanged_and_hold_every_stage(tmp_path):
    plain, kept = tmp_path / "plain.png", tmp_path / "kept.png"
    assert cli.main(["render", *ARGS, "-o", str(plain)]) == 0
    ckpt = tmp_path / "ckpt"
    assert (
        cli.main(["render", *ARGS, "-o", str(kept), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "2"])
        == 0
    )
    assert np.array_equal(pixels(plain), pixels(kept))
    assert sorted(os.listdir(ckpt)) == ["render.json", "stage0.pt", "stage1.pt", "stage2.pt"]
    snapshot = CheckpointDir(str(ckpt)).load(3)
    assert [tuple(t.shape[-2:]) for t in snapshot.finished] == [(16, 16), (32, 32), (64, 64)]


def test_stopped_driver_resumes_mid_stage_to_the_same_image(tmp_path, monkeypatch):
    plain, resumed = tmp_path / "plain.png", tmp_path / "resumed.png"
    assert cli.main(["render", *ARGS, "-o", str(plain)]) == 0
    ckpt = tmp_path / "ckpt"
    load = in_process_pool.load_model_for
    calls = []

    def load_then_stop_in_stage_three(*source):
        model = load(*source)

        def count(module, args, kwargs):
            calls.append(1)
            if len(calls) == 4 + 3 + 3:  # base 4 steps, stage 2 steps 1..3, stage 3 step 3 of 1..3
                raise Stop

        model.pipe.unet.register_forward_pre_hook(count, with_kwargs=True)
        return model

    monkeypatch.setattr(in_process_pool, "load_model_for", load_then_stop_in_stage_three)
    with pytest.raises(Stop):
        cli.main(
            ["render", *ARGS, "-o", str(resumed), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "2"]
        )
    assert not resumed.exists()
    snapshot = CheckpointDir(str(ckpt)).load(3)
    assert len(snapshot.finished) == 2 and snapshot.step == 2  # stage 3 stopped after its step 2
    monkeypatch.setattr(in_process_pool, "load_model_for", load)
    assert cli.main(["render", "--resume", str(ckpt), "--quiet"]) == 0
    assert np.array_equal(pixels(plain), pixels(resumed))


def render_dying_once(unet, call: int, state, config, *args, **kwargs):
    """render_on_rank, except that rank 1 dies at `unet`'s `call`-th call the first time (a marker file
    beside the output remembers it)."""
    marker = config.output + ".died"
    calls = []

    def count(module, args, kwargs):
        calls.append(1)
        if state.rank == 1 and len(calls) == call and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)

    handle = unet.register_forward_pre_hook(count, with_kwargs=True)
    try:
        return render_on_rank(state, config, *args, **kwargs)
    finally:
        handle.remove()


def dies_once_in_stage_three(state, config, *args, **kwargs):
    """Rank 1 dies at its 6th UNet call (stage 3, step 3) the first time."""
    return render_dying_once(state.model.pipe.unet, 6, state, config, *args, **kwargs)


def test_killed_worker_is_replaced_and_the_render_resumes_to_the_same_image(tmp_path, monkeypatch, capsys):
    whole, survived = tmp_path / "whole.png", tmp_path / "survived.png"
    assert cli.main(["render", *ARGS, "-o", str(whole), "--workers", "2"]) == 0
    monkeypatch.setattr(driver, "render_on_rank", dies_once_in_stage_three)
    ckpt = tmp_path / "ckpt"
    argv = ["render", *ARGS[:-1], "-o", str(survived), "--workers", "2", "--checkpoint-dir", str(ckpt)]
    assert cli.main([*argv, "--checkpoint-every", "2", "--max-retries", "1"]) == 0
    assert os.path.exists(str(survived) + ".died"), "the worker was not killed"
    log = capsys.readouterr().err
    assert "worker rank 1" in log and "starting fresh workers (retry 1/1)" in log
    assert "resuming from stage 3 step 2" in log
    assert np.array_equal(pixels(whole), pixels(survived))
    assert not ray.is_initialized()


def test_resume_refuses_other_settings_and_foreign_directories(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert cli.main(["render", *ARGS, "-o", str(tmp_path / "a.png"), "--checkpoint-dir", str(ckpt)]) == 0
    stored = json.loads((ckpt / "render.json").read_text())
    assert stored["recipe"]["seed"] == 5
    assert cli.main(["render", "--resume", str(ckpt), "--seed", "6"]) == 2
    assert "drop --seed" in capsys.readouterr().err
    other = ["render", "a lighthouse", "--scale", "4", "--steps", "4", "--seed", "6", "--quiet"]
    assert cli.main([*other, "-o", str(tmp_path / "b.png"), "--checkpoint-dir", str(ckpt)]) == 2
    assert "holds a different render" in capsys.readouterr().err
    assert cli.main(["render", "--resume", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert cli.main(["render", *ARGS, "--max-retries", "-1"]) == 2
    assert "--max-retries -1" in capsys.readouterr().err
    # The same settings again: everything is finished, only the outputs are written.
    assert cli.main(["render", "--resume", str(ckpt), "-o", str(tmp_path / "again.png"), "--quiet"]) == 0
    assert np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "again.png"))


def dies_once_in_a_clip(state, config, *args, **kwargs):
    """Rank 1 dies at its 5th motion-UNet call (stage 2) the first time."""
    from freescale.rendering.rank_render import motion_unet_of

    return render_dying_once(motion_unet_of(state, config), 5, state, config, *args, **kwargs)


def test_a_worker_killed_in_a_long_clip_resumes_its_chunk_to_the_same_clip(tmp_path, monkeypatch, capsys):
    """Two chunks at once, one per worker; the second worker dies in its chunk's second stage."""
    from freescale.inputs.video_reader import iter_frames, read_video_info

    args = ["video", "a koi pond", "--frames", "5", "--chunk-frames", "3", "--chunk-overlap", "1"]
    args += ["--window", "2", "--window-stride", "1", "--steps", "3", "--seed", "3", "--guidance", "1"]
    args += ["--workers", "2"]
    whole, survived = str(tmp_path / "whole.mkv"), str(tmp_path / "survived.mkv")
    assert cli.main([*args, "--quiet", "-o", whole]) == 0
    monkeypatch.setattr(driver, "render_on_rank", dies_once_in_a_clip)
    ckpt = str(tmp_path / "ckpt")
    extra = ["--checkpoint-dir", ckpt, "--checkpoint-every", "1", "--max-retries", "1"]
    assert cli.main([*args, "-o", survived, *extra]) == 0
    assert os.path.exists(survived + ".died"), "the worker was not killed"
    log = capsys.readouterr().err
    assert "frames x bands: 2 x 1" in log and "starting fresh workers (retry 1/1)" in log
    assert "resuming from stage 2 step" in log
    a, b = ([f.pixels for f in iter_frames(read_video_info(p))] for p in (whole, survived))
    assert len(a) == len(b) == 5 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(os.listdir(ckpt)) == ["chunk0000", "chunk0001", "render.json"]
