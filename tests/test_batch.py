"""`freescale batch`: warm model, outputs as they finish, reruns skip finished items, failures reported."""

import os
import re

import numpy as np
import pytest
import yaml

from freescale.cli import commands as cli
from freescale.models import loading as model_loading
from freescale.rendering import renderer as driver

JOBS = """
defaults: {scale: 2, steps: 3}
jobs:
  - {prompt: "a red fox", output: fox.png}
  - {prompt: "a bad one", output: bad.png, steps: 0}
  - {prompt: "a blue bird", output: bird.png, seed: 4}
"""


@pytest.fixture
def load_counter(monkeypatch):
    calls = []
    real = model_loading.load_model

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_loading, "load_model", counting)
    return calls


def test_batch_renders_reports_and_skips_on_rerun(tmp_path, capsys, load_counter):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS)
    assert cli.main(["batch", str(jobs), "--quiet"]) == 1
    err = capsys.readouterr().err
    # The job's key, not `freescale render`'s flag (batch has no --steps).
    assert "batch: 2 done, 0 skipped, 1 failed" in err and "failed: steps 0 must be at least 1" in err
    assert (tmp_path / "fox.png").exists() and (tmp_path / "bird.png").exists()
    assert not (tmp_path / "bad.png").exists()
    assert len(load_counter) == 1  # one warm model for the whole batch
    before = (tmp_path / "fox.png").read_bytes()
    assert cli.main(["batch", str(jobs), "--quiet"]) == 1
    assert "batch: 0 done, 2 skipped, 1 failed" in capsys.readouterr().err
    assert (tmp_path / "fox.png").read_bytes() == before


def test_a_failing_item_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS.replace("steps: 0", "steps: 3"))
    real = driver.Renderer.render_to_files

    def flaky(self, config, *args):
        if config.output.endswith("bad.png"):
            raise RuntimeError("out of memory on item 1")
        return real(self, config, *args)

    monkeypatch.setattr(driver.Renderer, "render_to_files", flaky)
    assert cli.main(["batch", str(jobs), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "batch: 2 done, 0 skipped, 1 failed" in err and "RuntimeError: out of memory on item 1" in err
    assert (tmp_path / "bird.png").exists()


def test_a_video_job_after_an_image_job_is_the_video_alone(tmp_path, capsys):
    """The image render leaves the warm UNet's layers in their band versions; the motion UNet built from it
    after must be the one a fresh model gives."""
    from freescale.inputs.video_reader import iter_frames, read_video_info

    video = {"prompt": "a koi pond", "frames": 2, "codec": "ffv1", "guidance": 1, "scale": 2, "steps": 1}
    video["motion_adapter"] = "tiny"
    jobs = tmp_path / "jobs.yaml"
    image = {"prompt": "a fox", "output": "fox.png", "scale": 2, "steps": 1}
    jobs.write_text(yaml.safe_dump({"jobs": [image, {**video, "output": "pond.mkv"}]}))
    assert cli.main(["batch", str(jobs), "--quiet"]) == 0, capsys.readouterr().err
    alone = str(tmp_path / "alone.mkv")
    args = ["--frames", "2", "--codec", "ffv1", "--guidance", "1", "--scale", "2", "--steps", "1", "--quiet"]
    assert cli.main(["video", "a koi pond", *args, "-o", alone]) == 0
    a, b = ([f.pixels for f in iter_frames(read_video_info(p))] for p in (str(tmp_path / "pond.mkv"), alone))
    assert len(a) == len(b) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_prompts_file(tmp_path, capsys):
    prompts = tmp_path / "posters.txt"
    prompts.write_text("# comment\na red fox\n\na blue bird\n")
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["batch", str(prompts), "--output-dir", str(out), "--quiet"]) == 0
    assert "batch: 2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == [
        "posters-0000.png",
        "posters-0001.png",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("jobs:\n  - {prompt: a}\n  - {prompt: b, model: /elsewhere}\n", "must share model"),
        ("jobs: 3\n", "'jobs' must be a list"),
        ("jobs: []\n", "has no jobs"),
    ],
)
def test_bad_batch_files_exit_2(text, message, tmp_path, capsys):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(text)
    assert cli.main(["batch", str(jobs)]) == 2
    assert message in capsys.readouterr().err


def test_a_stale_sidecar_is_replaced_with_its_new_image(tmp_path, capsys):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text('jobs:\n  - {prompt: "a red fox", output: fox.png, scale: 2, steps: 2}\n')
    (tmp_path / "fox.png.json").write_text('{"left": "by a crash between image and recipe"}')
    assert cli.main(["batch", str(jobs), "--quiet"]) == 0
    assert '"prompt": "a red fox"' in (tmp_path / "fox.png.json").read_text()


# Issue 15 point 6: one bad job fails alone, outputs stay in their folder, messages name batch's flags.
BAD_JOBS = """
defaults: {scale: 2, steps: 2}
jobs:
  - {prompt: "a red fox", output: fox.png}
  - {prompt: "numbers", output: n.png, negative_prompt: 3}
  - {prompt: "colour", output: c.png, colour: red}
  - {prompt: "nul \\0 byte", output: nul.png}
  - {prompt: "again", output: fox.png}
  - {prompt: "up", output: ../../up.png}
  - {prompt: "absolute", output: OUTSIDE}
  - {prompt: "raises", output: raises.png}
  - {prompt: "a blue bird", output: bird.png, seed: 4}
"""


def batch_flags() -> set[str]:
    from freescale.cli.commands import build_parser

    batch = build_parser()._subparsers._group_actions[0].choices["batch"]
    return {flag for action in batch._actions for flag in action.option_strings}


def test_bad_jobs_fail_alone_and_the_others_render(tmp_path, capsys, monkeypatch):
    from freescale.rendering import renderer as driver

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    folder = tmp_path / "jobs"
    folder.mkdir()
    jobs = folder / "jobs.yaml"
    jobs.write_text(BAD_JOBS.replace("OUTSIDE", str(outside / "abs.png")))
    real, rendered = driver.Renderer.render_to_files, []

    def render_or_raise(self, config, *args):
        rendered.append(os.path.basename(config.output))
        if config.output.endswith("raises.png"):
            raise ZeroDivisionError("not a known kind of failure")
        return real(self, config, *args)

    monkeypatch.setattr(driver.Renderer, "render_to_files", render_or_raise)
    assert cli.main(["batch", str(jobs), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "batch: 2 done, 0 skipped, 7 failed" in err, err
    assert rendered == ["fox.png", "raises.png", "bird.png"]  # the duplicate is refused before rendering
    lines = {line.split(")", 1)[0].split("(")[-1]: line for line in err.splitlines()[1:]}
    expected = {
        "n.png": "negative_prompt is 3 (int); expected text",
        "c.png": "unknown key 'colour'",
        "nul.png": "prompt contains a NUL byte",
        "fox.png": "is also job 0's",
        "up.png": "--allow-outside",
        "abs.png": "--allow-outside",
        "raises.png": "ZeroDivisionError: not a known kind of failure",
    }
    for output, message in expected.items():
        line = next(text for name, text in lines.items() if name.endswith(output))
        assert message in line, line
    assert (folder / "fox.png").exists() and (folder / "bird.png").exists()
    assert not (tmp_path / "up.png").exists() and not (outside / "abs.png").exists()
    # Every flag a message names is one `freescale batch` has.
    assert set(re.findall(r"--[a-z][a-z-]*", err)) <= batch_flags()


def test_allow_outside_lets_a_job_write_elsewhere(tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    folder = tmp_path / "jobs"
    folder.mkdir()
    jobs = folder / "jobs.yaml"
    jobs.write_text(f'jobs:\n  - {{prompt: "up", output: {outside / "abs.png"}, scale: 2, steps: 2}}\n')
    assert cli.main(["batch", str(jobs), "--quiet"]) == 1
    assert cli.main(["batch", str(jobs), "--quiet", "--allow-outside"]) == 0
    assert (outside / "abs.png").exists()


def test_one_invalid_utf8_line_of_a_prompts_file_fails_alone(tmp_path):
    from freescale.rendering.batch import load_jobs, plan_items

    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a red fox\ncaf\xe9 au lait\na blue bird\n")
    items = plan_items(load_jobs(str(prompts)), 128)
    assert [item.status for item in items] == ["pending", "failed", "pending"]
    assert "prompt is not valid UTF-8 (byte 0xe9" in items[1].message
