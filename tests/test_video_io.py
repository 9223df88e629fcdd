"""Video I/O: probing, decoding, encoding with timing/colour/rotation/audio carried, output checks, frame
patterns and atomic writes, on small clips made here with PyAV."""

import json
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import tifffile
from PIL import Image

from freescale.config.video_outputs import check_video_output
from freescale.errors import ConfigError
from freescale.inputs.video_info import ColourInfo
from freescale.inputs.video_reader import iter_frames, read_recipe, read_video_info
from freescale.outputs.video.audio_remux import check_audio_fits
from freescale.outputs.video.video_writer import StreamTags, VideoTiming, frames_at_fps, write_video

W, H = 64, 48
VFR_PTS = [0, 40, 90, 100, 170, 200, 260, 300]  # milliseconds, irregular


def gradient(i: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 4, y * 5, np.full_like(x, 20 * i)], axis=-1).astype(np.uint8)


def make_clip(
    path,
    pts=VFR_PTS,
    time_base=Fraction(1, 1000),
    codec="libx264",
    pix_fmt="yuv420p",
    audio=None,
    rotation=0,
    colour=None,
):
    out = av.open(path, "w")
    video = out.add_stream(codec, rate=25)
    video.width, video.height, video.pix_fmt = W, H, pix_fmt
    video.time_base = video.codec_context.time_base = time_base
    video.codec_context.thread_count = 1
    if colour:
        cc = video.codec_context
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = colour
    if rotation:
        video.set_display_rotation(rotation)
    sound = out.add_stream(audio, rate=48000, layout="stereo") if audio else None
    for i, p in enumerate(pts):
        frame = av.VideoFrame.from_ndarray(gradient(i), format="rgb24").reformat(format=pix_fmt)
        frame.pts, frame.time_base = p, time_base
        out.mux(video.encode(frame))
    out.mux(video.encode())
    if sound:
        fmt = sound.codec_context.codec.audio_formats[0].name
        for start in range(0, 48000 * 3 // 10, 960):
            chunk = av.AudioFrame(format=fmt, layout="stereo", samples=960)
            for plane in chunk.planes:
                plane.update(
                    np.random.default_rng(start).integers(0, 50, plane.buffer_size, np.uint8).tobytes()
                )
            chunk.sample_rate, chunk.pts = 48000, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    out.close()
    return path


def audio_packets(path):
    with av.open(path) as container:
        stream = container.streams.audio[0]
        return [(bytes(p), p.pts * p.time_base) for p in container.demux(stream) if p.size]


def times(info):
    return [p * info.time_base for p in info.pts]


def upscale_copy(info, out, **kwargs):
    target = check_video_output(
        out,
        kwargs.pop("codec", None),
        kwargs.pop("bit_depth", 8),
        kwargs.get("overwrite", False),
        info.frame_count,
    )
    write_video(
        target,
        iter_frames(info),
        VideoTiming.of(info),
        StreamTags.of(info),
        audio_from=info,
        threads=1,
        frame_count=info.frame_count,
        **kwargs,
    )


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv"])
def test_vfr_frame_count_pts_and_time_base_survive(tmp_path, ext):
    info = read_video_info(make_clip(str(tmp_path / "in.mp4")))
    assert info.frame_count == len(VFR_PTS) and (info.width, info.height) == (W, H)
    assert info.bit_depth == 8
    out = str(tmp_path / f"out{ext}")
    upscale_copy(info, out)
    back = read_video_info(out)
    assert back.frame_count == info.frame_count
    assert times(back) == times(info) == [Fraction(p, 1000) for p in VFR_PTS]
    if ext != ".mkv":  # Matroska always counts in milliseconds; the others keep the caller's time base
        assert back.time_base == info.time_base
    decoded = [f.pts * back.time_base for f in iter_frames(back)]
    assert decoded == times(info)


def test_pixels_survive_lossless_ffv1(tmp_path):
    source = [gradient(i) for i in range(6)]
    out = str(tmp_path / "t2v.mkv")
    write_video(check_video_output(out), frames_at_fps(iter(source)), VideoTiming.from_fps(8), threads=1)
    info = read_video_info(out)
    assert info.frame_count == 6 and times(info) == [Fraction(i, 8) for i in range(6)]
    for frame, expected in zip(iter_frames(info), source, strict=True):
        np.testing.assert_array_equal(frame.pixels, expected)


@pytest.mark.parametrize("codec,ext", [("aac", ".mp4"), ("libopus", ".mkv"), ("aac", ".mov")])
def test_audio_packets_carried_unchanged(tmp_path, codec, ext):
    info = read_video_info(make_clip(str(tmp_path / "in.mkv"), audio=codec))
    assert [a.channels for a in info.audio] == [2] and info.audio[0].sample_rate == 48000
    out = str(tmp_path / f"out{ext}")
    check_audio_fits(info, out)
    upscale_copy(info, out)
    assert audio_packets(out) == audio_packets(info.path)
    assert len(audio_packets(out)) > 5


@pytest.mark.parametrize(
    "codec,ext,alternative", [("pcm_s16le", ".mp4", ".mkv or .mov"), ("libopus", ".mov", ".mkv or .mp4")]
)
def test_audio_that_cannot_go_in_is_refused_before_writing(tmp_path, codec, ext, alternative):
    info = read_video_info(make_clip(str(tmp_path / "in.mkv"), audio=codec))
    out = str(tmp_path / f"out{ext}")
    with pytest.raises(ConfigError, match=f"cannot be carried into \\{ext}: use {alternative}$") as error:
        check_audio_fits(info, out)
    assert "\n" not in str(error.value)
    frames_pulled = []

    def frames():
        for frame in iter_frames(info):
            frames_pulled.append(1)
            yield frame

    with pytest.raises(ConfigError, match="cannot be carried"):
        write_video(check_video_output(out), frames(), VideoTiming.of(info), audio_from=info)
    assert frames_pulled == [] and os.listdir(tmp_path) == ["in.mkv"]


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_carried(tmp_path, rotation):
    info = read_video_info(make_clip(str(tmp_path / "in.mp4"), rotation=rotation))
    assert info.rotation == rotation % 360
    for ext in (".mp4", ".mkv"):
        upscale_copy(info, str(tmp_path / f"out{ext}"))
        assert read_video_info(str(tmp_path / f"out{ext}")).rotation == rotation % 360


def test_ten_bit_input_read_as_uint16_and_written_to_prores(tmp_path):
    info = read_video_info(make_clip(str(tmp_path / "in.mkv"), codec="ffv1", pix_fmt="yuv420p10le"))
    assert info.bit_depth == 10 and info.pixel_format == "yuv420p10le"
    first = next(iter_frames(info)).pixels
    assert first.dtype == np.uint16 and first.shape == (H, W, 3)
    expected = gradient(0).astype(np.float64) * 257
    assert np.abs(first[4:-4, 4:-4] - expected[4:-4, 4:-4]).mean() < 2 * 257
    upscale_copy(info, str(tmp_path / "out.mov"), bit_depth=16)
    back = read_video_info(str(tmp_path / "out.mov"))
    assert (back.codec, back.pixel_format, back.frame_count) == ("prores", "yuv422p10le", info.frame_count)


def test_colour_range_and_matrix_carried(tmp_path):
    bt2020_full = (2, 9, 9, 14)  # full range, BT.2020 non-constant matrix, BT.2020 primaries, BT.2020 10-bit
    info = read_video_info(make_clip(str(tmp_path / "in.mp4"), colour=bt2020_full))
    assert info.colour == ColourInfo(*bt2020_full)
    for ext in (".mp4", ".mov"):
        upscale_copy(info, str(tmp_path / f"out{ext}"))
        back = read_video_info(str(tmp_path / f"out{ext}"))
        # ProRes is video (limited) range by definition: full-range input is converted, the rest carried.
        expected = info.colour if ext == ".mp4" else ColourInfo(1, *bt2020_full[1:])
        assert back.colour == expected
        # Converted with the matrix and range it is tagged with: the pixels come back close.
        scale = 257.0 if back.bit_depth > 8 else 1.0  # ProRes is 10-bit: read at 16 bits
        np.testing.assert_allclose(
            next(iter_frames(back)).pixels[8:-8, 8:-8] / scale,
            next(iter_frames(info)).pixels[8:-8, 8:-8].astype(float),
            atol=12,
        )


def test_not_a_video_audio_only_and_zero_frames_refused(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(ConfigError, match="is not a video FFmpeg can read"):
        read_video_info(str(text))
    sound = av.open(str(tmp_path / "sound.m4a"), "w")
    stream = sound.add_stream("aac", rate=48000)
    chunk = av.AudioFrame(format="fltp", layout="mono", samples=1024)
    chunk.planes[0].update(bytes(chunk.planes[0].buffer_size))
    chunk.sample_rate, chunk.pts = 48000, 0
    sound.mux(stream.encode(chunk))
    sound.mux(stream.encode())
    sound.close()
    with pytest.raises(ConfigError, match="has no video stream$"):
        read_video_info(str(tmp_path / "sound.m4a"))
    # A YUV4MPEG header alone: a video stream and no frame (MP4/MKV muxers write no stream without one).
    (tmp_path / "empty.y4m").write_text("YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg\n")
    with pytest.raises(ConfigError, match="has a video stream with zero frames$"):
        read_video_info(str(tmp_path / "empty.y4m"))
    with pytest.raises(ConfigError, match="does not exist"):
        read_video_info(str(tmp_path / "missing.mp4"))


def test_frame_patterns_png_8_bit_and_tiff_16_bit(tmp_path):
    info = read_video_info(make_clip(str(tmp_path / "in.mkv"), codec="ffv1", pix_fmt="yuv420p10le"))
    (tmp_path / "png").mkdir()
    (tmp_path / "tif").mkdir()
    upscale_copy(info, str(tmp_path / "png" / "shot_%05d.png"), recipe={"seed": 3})
    upscale_copy(info, str(tmp_path / "tif" / "shot_%04d.tif"), bit_depth=16)
    pngs = sorted(os.listdir(tmp_path / "png"))
    assert pngs == sorted([f"shot_{i:05d}.png" for i in range(info.frame_count)] + ["shot_%05d.png.json"])
    with Image.open(tmp_path / "png" / "shot_00000.png") as image:
        assert image.mode == "RGB" and image.size == (W, H)
    tifs = sorted(os.listdir(tmp_path / "tif"))
    assert tifs == [f"shot_{i:04d}.tif" for i in range(info.frame_count)]
    pixels = tifffile.imread(tmp_path / "tif" / "shot_0002.tif")
    assert pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels, list(iter_frames(info))[2].pixels)
    with pytest.raises(ConfigError, match="shot_00000.png' already exists"):
        check_video_output(str(tmp_path / "png" / "shot_%05d.png"), frame_count=info.frame_count)


def test_output_checks_refuse_with_one_line(tmp_path):
    (tmp_path / "taken.mp4").write_bytes(b"x")
    cases = {
        "out.avi": "unknown extension '.avi'",
        "missing/out.mp4": "does not exist",
        "taken.mp4": "already exists",
        "out.png": "needs exactly one %0Nd",
        "out_%05d.jpg": "and a .png or .tif extension",
    }
    for name, message in cases.items():
        with pytest.raises(ConfigError, match=message) as error:
            check_video_output(str(tmp_path / name))
        assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="--codec 'prores' cannot be written to .mp4; allowed: h264, h265"):
        check_video_output(str(tmp_path / "a.mp4"), codec="prores")
    with pytest.raises(ConfigError, match="--bit-depth 16 is not allowed for .mp4"):
        check_video_output(str(tmp_path / "a.mp4"), bit_depth=16)
    with pytest.raises(ConfigError, match="--bit-depth 16 is not allowed for .png frames"):
        check_video_output(str(tmp_path / "a_%03d.png"), bit_depth=16)
    assert check_video_output(str(tmp_path / "a.mov"), codec="prores4444", bit_depth=16).codec == "prores4444"
    assert check_video_output(str(tmp_path / "taken.mp4"), overwrite=True).codec == "h264"


def test_h265_and_crf(tmp_path):
    info = read_video_info(make_clip(str(tmp_path / "in.mp4")))
    upscale_copy(info, str(tmp_path / "out.mp4"), codec="h265", crf=30)
    back = read_video_info(str(tmp_path / "out.mp4"))
    assert (back.codec, back.frame_count, times(back)) == ("hevc", info.frame_count, times(info))


def test_failed_write_leaves_nothing_and_existing_output_is_kept(tmp_path):
    info = read_video_info(make_clip(str(tmp_path / "in.mp4")))

    def breaks_midway():
        for index, frame in enumerate(iter_frames(info)):
            if index == 4:
                raise RuntimeError("the GPU fell over")
            yield frame

    with pytest.raises(RuntimeError, match="fell over"):
        write_video(check_video_output(str(tmp_path / "out.mp4")), breaks_midway(), VideoTiming.of(info))
    assert os.listdir(tmp_path) == ["in.mp4"]
    (tmp_path / "out.mkv").write_bytes(b"precious")
    target = check_video_output(str(tmp_path / "out.mkv"), overwrite=True)
    with pytest.raises(ConfigError, match="already exists"):
        write_video(target, iter_frames(info), VideoTiming.of(info))
    assert (tmp_path / "out.mkv").read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["in.mp4", "out.mkv"]
    write_video(target, iter_frames(info), VideoTiming.of(info), overwrite=True, threads=1)
    assert read_video_info(str(tmp_path / "out.mkv")).frame_count == info.frame_count


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv"])
def test_recipe_in_container_metadata_and_sidecar(tmp_path, ext):
    recipe = {"prompt": "a lighthouse", "seed": 7, "stages": [512, 1024]}
    out = str(tmp_path / f"out{ext}")
    frames = frames_at_fps(gradient(i) for i in range(6))
    write_video(
        check_video_output(out), frames, VideoTiming.from_fps(Fraction(24000, 1001)), recipe=recipe, threads=1
    )
    assert read_recipe(out) == recipe
    with open(out + ".json", encoding="utf-8") as handle:
        assert json.load(handle) == recipe
    info = read_video_info(out)
    expected = [Fraction(i * 1001, 24000) for i in range(6)]
    if ext == ".mkv":  # Matroska stores milliseconds
        expected = [Fraction(round(t * 1000), 1000) for t in expected]
    assert info.frame_count == 6 and times(info) == expected
