"""`freescale batch --input-dir`: a folder of clips upscaled on one warm model, a corrupt clip reported and
the others finished, a rerun skipping what is done, and bad input refused before any model loads."""

import json

import pytest
from test_video_io import make_clip

from freescale.cli.commands import main
from freescale.inputs.video_reader import read_video_info
from freescale.models import loading as model_loading
from freescale.rendering import renderer as driver
from freescale.rendering.clip_folder import folder_jobs, output_extension

FAST = ["--preset", "video-2x", "--steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """a.mp4 (with audio), b.mkv (64x48, silent), a corrupt c.mov, d.mkv whose PCM audio .mp4 cannot carry,
    and files that are not clips."""
    folder = tmp_path_factory.mktemp("clips")
    assert main(["make-test-clip", str(folder / "a.mp4"), "--size", "64x64", "--frames", "2"]) == 0
    assert main(["make-test-clip", str(folder / "b.mkv"), "--frames", "2", "--no-audio"]) == 0
    (folder / "c.mov").write_bytes(b"\x00\x00\x00\x18ftypqt  " + bytes(range(256)) * 8)
    make_clip(str(folder / "d.mkv"), audio="pcm_s16le")
    (folder / ".hidden.mp4").write_bytes((folder / "a.mp4").read_bytes())
    (folder / "notes.txt").write_text("not a clip")
    (folder / "sub").mkdir()
    (folder / "sub" / "e.mp4").write_bytes((folder / "a.mp4").read_bytes())
    return folder


@pytest.fixture
def counters(monkeypatch):
    """How many times a model is loaded and a worker pool is started."""
    loads, pools = [], []
    real_load, real_enter = model_loading.load_model, driver.Renderer.__enter__

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    def counting_enter(self):
        pools.append(self.placement)
        return real_enter(self)

    monkeypatch.setattr(model_loading, "load_model", counting_load)
    monkeypatch.setattr(driver.Renderer, "__enter__", counting_enter)
    return loads, pools


def test_a_folder_renders_reports_the_corrupt_clip_and_a_rerun_skips(clips, tmp_path, capsys, counters):
    out = tmp_path / "out"
    out.mkdir()
    args = ["batch", "--input-dir", str(clips), "--output-dir", str(out), *FAST]
    assert main(args) == 1  # partial failure, as a jobs file's
    err = capsys.readouterr().err
    assert "batch: 2 done, 0 skipped, 2 failed" in err, err
    assert f"item 2 ({out / 'c.mp4'}) failed: input '{clips / 'c.mov'}' is not a video" in err
    assert f"item 3 ({out / 'd.mp4'}) failed: the input's pcm_s16le audio (stream 1) cannot be carried" in err
    rate = next(line for line in err.splitlines() if line.startswith("video: "))
    assert rate.startswith("video: 4 frames rendered in ") and rate.endswith(" frames/s")
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "a.mp4.json", "b.mp4", "b.mp4.json"]
    a, b = read_video_info(str(out / "a.mp4")), read_video_info(str(out / "b.mp4"))
    assert (a.width, a.height, a.frame_count, len(a.audio)) == (128, 128, 2, 1)
    assert (b.width, b.height, b.frame_count, len(b.audio)) == (128, 96, 2, 0)
    recipe = json.loads((out / "b.mp4.json").read_text())
    # The preset's settings with the flags over them; the built-in model's own motion adapter.
    assert recipe["input"] == str(clips / "b.mkv") and recipe["steps"] == 1 and recipe["dilate_tau"] == 21
    assert recipe["motion_adapter"] == "tiny" and recipe["restart"] == pytest.approx(0.4)
    loads, pools = counters
    assert len(loads) == 1 and len(pools) == 1  # one warm model and pool for every clip

    before = (out / "a.mp4").read_bytes()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "batch: 0 done, 2 skipped, 2 failed" in err and "video: " not in err
    assert (out / "a.mp4").read_bytes() == before
    assert len(loads) == 1  # nothing left to render: no model loaded


def test_the_container_follows_the_codec_and_bit_depth(clips, tmp_path):
    assert output_extension(None, None) == ".mp4"
    assert output_extension("ffv1", None) == ".mkv" and output_extension("prores4444", 16) == ".mov"
    assert output_extension(None, 16) == ".mov" and output_extension("h265", 8) == ".mp4"
    jobs = folder_jobs(str(clips), str(tmp_path), None, {"codec": "ffv1", "steps": 2})
    assert [(j["input"], j["output"]) for j in jobs] == [
        (str(clips / f"{stem}.{ext}"), str(tmp_path / f"{stem}.mkv"))
        for stem, ext in (("a", "mp4"), ("b", "mkv"), ("c", "mov"), ("d", "mkv"))
    ]
    assert all(j["steps"] == 2 and j["codec"] == "ffv1" and j["motion_adapter"] == "tiny" for j in jobs)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--input-dir", "{tmp}/nowhere", "--output-dir", "{tmp}"], "nowhere: no such directory"),
        (["--input-dir", "{empty}", "--output-dir", "{tmp}"], "has no clips (.mp4, .mov, .mkv, .webm"),
        (["{jobs}", "--input-dir", "{clips}", "--output-dir", "{tmp}"], "a jobs file or --input-dir"),
        (["--output-dir", "{tmp}"], "a jobs file or --input-dir"),
        (["--input-dir", "{clips}"], "--input-dir needs --output-dir"),
        (["--input-dir", "{clips}", "--output-dir", "{tmp}/nowhere"], "nowhere: no such directory"),
        (["--input-dir", "{clips}", "--output-dir", "{clips}"], "is --input-dir; give the outputs"),
        (["{jobs}", "--steps", "3"], "--steps is for --input-dir; a jobs file gives it in its defaults"),
        (["{jobs}", "--preset", "video-2x"], "--preset is for --input-dir"),
        (["--input-dir", "{clips}", "--output-dir", "{tmp}", "--preset", "nope"], "'nope' is neither"),
        (["--input-dir", "{clips}", "--output-dir", "{tmp}", "--codec", "h264", "--bit-depth", "16"],
         "--bit-depth 16 is not allowed for .mp4"),
        (["--input-dir", "{clips}", "--output-dir", "{tmp}", "--model", "{tmp}"],
         "--motion-adapter is needed"),
        (["--input-dir", "{good}", "--output-dir", "{tmp}", "--steps", "0"],
         "every job: steps 0 must be at least 1"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_before_any_model_loads(arguments, message, clips, tmp_path, capsys, counters):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden.mp4").write_bytes((clips / "a.mp4").read_bytes())
    (empty / "notes.txt").write_text("not a clip")
    good = tmp_path / "good"  # clips every job of which a bad flag fails alike
    good.mkdir()
    for name in ("a.mp4", "b.mkv"):
        (good / name).write_bytes((clips / name).read_bytes())
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text('jobs:\n  - {prompt: "a red fox", output: fox.png}\n')
    places = {"tmp": tmp_path, "empty": empty, "jobs": jobs, "clips": clips, "good": good}
    assert main(["batch", *(a.format(**places) for a in arguments), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert counters == ([], [])
