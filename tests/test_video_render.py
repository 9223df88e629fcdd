"""`freescale video` end to end on the built-in models: text-to-video and video-to-video (frames, timing,
audio, rotation, sizes, 10-bit), recipes that reproduce a clip exactly, the presets, make-test-clip, and
bad input refused with exit 2 before any model loads."""

import json
from fractions import Fraction

import numpy as np
import pytest
from test_video_io import audio_packets, make_clip, times

from freescale.cli.commands import main
from freescale.inputs.video_reader import iter_frames, read_recipe, read_video_info
from freescale.models import loading
from freescale.outputs.video.synthetic_clips import PAN_PIXELS_PER_FRAME, pan_frame

FAST = ["--steps", "3", "--dilate-tau", "2", "--quiet"]


def frames_of(path: str) -> np.ndarray:
    return np.stack([frame.pixels for frame in iter_frames(read_video_info(path))])


@pytest.mark.parametrize("model, native", [("tiny", 128), ("tiny-sd15", 128)])
def test_text_to_video_clip_with_its_rate_and_recipe(tmp_path, model, native):
    out = str(tmp_path / "fox.mkv")
    args = ["video", "a fox running", "--model", model, "--frames", "4", "--fps", "12", "-o", out]
    assert main(args + FAST) == 0
    info = read_video_info(out)
    assert (info.width, info.height, info.frame_count) == (2 * native, 2 * native, 4)
    # Matroska keeps milliseconds.
    assert all(abs(t - Fraction(i, 12)) <= Fraction(1, 1000) for i, t in enumerate(times(info)))
    recipe = read_recipe(out)
    with open(out + ".json", encoding="utf-8") as handle:
        assert json.load(handle) == recipe
    assert recipe["motion_adapter"] == "tiny" and recipe["frames"] == 4 and recipe["fps"] == 12
    assert recipe["stages"] == [[native, native], [2 * native, 2 * native]]
    frames = frames_of(out)
    assert frames.std(axis=0).mean() > 1  # the frames differ: the motion modules act


def test_a_recipe_reproduces_the_clip_bit_identical(tmp_path):
    first, again = str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv")
    assert main(["video", "waves", "--frames", "3", "--seed", "5", "-o", first] + FAST) == 0
    assert main(["video", "--from-recipe", first + ".json", "-o", again, "--quiet"]) == 0
    assert np.array_equal(frames_of(first), frames_of(again))
    assert main(["video", "waves", "--frames", "3", "--seed", "6", "-o", str(tmp_path / "c.mkv")] + FAST) == 0
    assert not np.array_equal(frames_of(first), frames_of(str(tmp_path / "c.mkv")))


def test_video_to_video_keeps_frame_count_timing_audio_and_rotation(tmp_path):
    clip = make_clip(str(tmp_path / "in.mp4"), audio="aac", rotation=90)  # 64x48, 8 frames, irregular pts
    out = str(tmp_path / "up.mp4")
    assert main(["video", "--input", clip, "-o", out] + FAST) == 0
    source, result = read_video_info(clip), read_video_info(out)
    assert (result.width, result.height) == (128, 96)  # twice the input: the padding to 64x64 cropped off
    assert result.frame_count == source.frame_count
    assert times(result) == times(source)
    assert audio_packets(out) == audio_packets(clip)
    assert result.rotation == 90
    recipe = read_recipe(out)
    assert recipe["input"] == clip and recipe["stages"] == [[64, 64], [128, 128]]
    assert recipe["frame_size"] == [96, 128] and recipe["prompt"] == ""


def test_the_upscale_follows_its_input_and_strength_controls_how_closely(tmp_path):
    clip = str(tmp_path / "pan.mkv")
    assert main(["make-test-clip", clip, "--size", "64x64", "--frames", "4", "--no-audio"]) == 0
    expected = np.stack([pan_frame(i, 64, 64) for i in range(4)]).astype(float)
    errors = {}
    for strength in ("0.2", "1.0"):
        out = str(tmp_path / f"up{strength}.mkv")
        args = ["video", "--input", clip, "--strength", strength, "--guidance", "1", "-o", out]
        assert main(args + FAST) == 0
        frames = frames_of(out).astype(float)
        halved = frames.reshape(4, 64, 2, 64, 2, 3).mean(axis=(2, 4))  # back to the input's size
        errors[strength] = np.abs(halved - expected).mean()
    assert errors["0.2"] < errors["1.0"]
    assert PAN_PIXELS_PER_FRAME == 2


def test_size_gives_the_exact_output_size_and_rgb_upsampling_differs(tmp_path):
    clip = make_clip(str(tmp_path / "in.mp4"))
    exact = str(tmp_path / "exact.mkv")
    assert main(["video", "--input", clip, "--size", "100x70", "-o", exact] + FAST) == 0
    assert (read_video_info(exact).width, read_video_info(exact).height) == (100, 70)
    assert read_recipe(exact)["stages"] == [[64, 64], [128, 128]]
    latent, rgb = str(tmp_path / "latent.mkv"), str(tmp_path / "rgb.mkv")
    assert main(["video", "--input", clip, "-o", latent] + FAST) == 0
    assert main(["video", "--input", clip, "--upsample", "rgb", "-o", rgb] + FAST) == 0
    a, b = frames_of(latent).astype(int), frames_of(rgb).astype(int)
    assert a.shape == b.shape == (8, 96, 128, 3) and np.abs(a - b).mean() > 0.5


def test_ten_bit_input_and_a_16_bit_output(tmp_path):
    clip = make_clip(str(tmp_path / "in.mkv"), codec="ffv1", pix_fmt="yuv420p10le")
    out = str(tmp_path / "up.mov")
    assert main(["video", "--input", clip, "--bit-depth", "16", "-o", out] + FAST) == 0
    info = read_video_info(out)
    assert (info.codec, info.pixel_format, info.frame_count) == ("prores", "yuv422p10le", 8)


def test_frame_pattern_output_and_progress(tmp_path, capsys):
    (tmp_path / "frames").mkdir()
    pattern = str(tmp_path / "frames" / "fox_%03d.png")
    assert main(["video", "a fox", "--frames", "3", "-o", pattern, "--steps", "3", "--dilate-tau", "2"]) == 0
    log = capsys.readouterr().err
    assert "stage 2/2 step 3/3 ETA" in log and "frame 3/3 ETA" in log and "writing " + pattern in log
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        "fox_%03d.png.json", "fox_000.png", "fox_001.png", "fox_002.png",
    ]  # fmt: skip


@pytest.fixture
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(loading, "load_model", refuse)


def test_bad_input_exits_2_before_any_model_loads(tmp_path, capsys, no_model_loads):
    clip = make_clip(str(tmp_path / "in.mp4"))
    pcm = make_clip(str(tmp_path / "pcm.mkv"), audio="pcm_s16le")
    (tmp_path / "text.mp4").write_text("no video here\n" * 10)
    (tmp_path / "taken.mp4").write_bytes(b"mine")
    (tmp_path / "folder.mkv").mkdir()
    out = str(tmp_path / "o.mp4")
    cases = {
        "is not a video FFmpeg can read": ["--input", str(tmp_path / "text.mp4"), "-o", out],
        "input video .* does not exist": ["--input", str(tmp_path / "none.mp4"), "-o", out],
        "--window 17 is more than the .* positional table of 16": ["x", "--window", "17", "-o", out],
        "--window 0 must be at least 1": ["x", "--window", "0", "-o", out],
        r"--window-stride 9 must be between 1 and --window \(8\)": [
            "x",
            "--window-stride=9",
            "--window=8",
            "-o",
            out,
        ],
        "--frames 0 must be at least 1": ["x", "--frames", "0", "-o", out],
        r"--strength 0.0 must be in \(0, 1\]": ["--input", clip, "--strength", "0", "-o", out],
        r"--strength 1.5 must be in \(0, 1\]": ["--input", clip, "--strength", "1.5", "-o", out],
        "give --strength or --restart": ["--input", clip, "--strength", ".5", "--restart", ".2", "-o", out],
        "pcm_s16le audio .* cannot be carried into .mp4: use .mkv or .mov": ["--input", pcm, "-o", out],
        "unknown extension '.avi'": ["x", "-o", str(tmp_path / "o.avi")],
        "already exists; pass --overwrite": ["x", "-o", str(tmp_path / "taken.mp4")],
        "--image applies to images": ["x", "--image", clip, "-o", out],
        "--fps does not apply with --input": ["--input", clip, "--fps", "24", "-o", out],
        "--frames 3: the input .* has 8 frames": ["--input", clip, "--frames", "3", "-o", out],
        "smaller than the input's 64x48": ["--input", clip, "--size", "32x32", "-o", out],
        "--codec 'prores' cannot be written to .mp4": ["x", "--codec", "prores", "-o", out],
        "--crf 60 must be in 0..51": ["x", "--crf", "60", "-o", out],
        "the prompt is empty": ["", "-o", out],
        "is a directory": ["x", "-o", str(tmp_path / "folder.mkv")],
    }
    for message, args in cases.items():
        assert main(["video", *args, "--quiet"]) == 2, message
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1, error
        assert error.startswith("freescale: error: ")
        assert __import__("re").search(message, error), (message, error)
    assert not (tmp_path / "o.mp4").exists()


def test_image_and_video_commands_keep_to_their_settings(tmp_path, capsys, no_model_loads):
    assert main(["render", "x", "--preset", "video-2x", "-o", str(tmp_path / "a.png")]) == 2
    assert "--strength applies to `freescale video` only" in capsys.readouterr().err
    recipe = tmp_path / "clip.mkv.json"
    recipe.write_text(json.dumps({"prompt": "x", "stages": [[128, 128]], "motion_adapter": "tiny"}))
    assert main(["render", "--from-recipe", str(recipe), "-o", str(tmp_path / "b.png")]) == 2
    assert "render them with `freescale video`" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["render", "x", "--frames", "4"])  # not a render flag at all


def test_presets_size_the_upscale(tmp_path):
    clip = make_clip(str(tmp_path / "in.mp4"))
    out = str(tmp_path / "x4.mp4")
    assert main(["video", "--input", clip, "--preset", "video-4x", "-o", out] + FAST) == 0
    assert (read_video_info(out).width, read_video_info(out).height) == (256, 192)
    recipe = read_recipe(out)
    assert recipe["stages"] == [[64, 64], [128, 128], [256, 256]]
    assert recipe["restart"] == pytest.approx(0.4) and recipe["upsample"] == "latent"


def test_the_plan_and_preflight_count_every_frame(tmp_path):
    from freescale.config.render_config import build_config
    from freescale.planning.plan import plan_for_config

    values = {"prompt": "x", "motion_adapter": "tiny", "output": str(tmp_path / "o.mp4"), "scale": 4}
    one, many = (build_config({**values, "frames": n}, 128) for n in (1, 16))
    single, clip = plan_for_config(one, device="cpu"), plan_for_config(many, device="cpu")
    for a, b in zip(single.stages, clip.stages, strict=True):
        assert b.batch == 16 * a.batch
        assert b.unet_s > 8 * a.unet_s
    assert clip.peak_bytes > single.peak_bytes and clip.output_s == pytest.approx(16 * single.output_s)


def test_a_batch_of_video_jobs_and_its_rerun(tmp_path, capsys):
    (tmp_path / "clips").mkdir()
    assert main(["make-test-clip", str(tmp_path / "clips" / "a.mp4"), "--frames", "3"]) == 0
    jobs = tmp_path / "clips" / "jobs.yaml"
    jobs.write_text(
        "defaults: {steps: 3, dilate_tau: 2, motion_adapter: tiny}\n"
        "jobs:\n"
        "  - {input: a.mp4, output: a-2x.mp4, strength: 0.5}\n"  # relative to the jobs file
        "  - {input: missing.mp4, output: b-2x.mp4}\n"
        "  - {prompt: a koi pond, frames: 2, output: koi.mkv}\n"
    )
    out = tmp_path / "out"
    out.mkdir()
    assert main(["batch", str(jobs), "--output-dir", str(out), "--quiet"]) == 1
    assert "batch: 2 done, 0 skipped, 1 failed" in capsys.readouterr().err
    assert read_video_info(str(out / "a-2x.mp4")).frame_count == 3
    assert audio_packets(str(out / "a-2x.mp4")) == audio_packets(str(tmp_path / "clips" / "a.mp4"))
    assert read_video_info(str(out / "koi.mkv")).frame_count == 2
    assert main(["batch", str(jobs), "--output-dir", str(out), "--quiet"]) == 1
    assert "batch: 0 done, 2 skipped, 1 failed" in capsys.readouterr().err


def test_make_test_clip_makes_its_folder_and_refuses_a_place_it_cannot_write(tmp_path, capsys):
    clip = tmp_path / "new" / "deeper" / "a.mp4"
    assert main(["make-test-clip", str(clip), "--frames", "2", "--no-audio"]) == 0
    assert read_video_info(str(clip)).frame_count == 2
    (tmp_path / "file").write_text("not a folder")
    capsys.readouterr()
    assert main(["make-test-clip", str(tmp_path / "file" / "a.mp4"), "--frames", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "cannot write in" in error, error
