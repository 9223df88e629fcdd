"""Any output size: print sizes to pixels, the trained base size nearest the aspect, the stages, the centred
crop or Lanczos resize of the last stage, `freescale plan` showing them, and bad input exiting 2."""

import dataclasses
import json
from fractions import Fraction

import numpy as np
import pytest
import tifffile
from PIL import Image

from freescale.cli import commands as cli
from freescale.config.presets import recipe_values
from freescale.config.render_config import build_config
from freescale.errors import ConfigError
from freescale.outputs.fitted_strips import centre_cropped
from freescale.outputs.lanczos_strips import lanczos_strips
from freescale.tiling.buckets import nearest_bucket, trained_buckets
from freescale.tiling.fitted_stages import aspect_box, crop_offsets, fitted_stages
from freescale.tiling.print_sizes import millimetres_to_pixels, parse_aspect, print_pixels
from freescale.tiling.stages import stages_for_target

POSTER = ((1216, 832), (2432, 1664), (4864, 3328), (9728, 6656), (10816, 7232))


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr("freescale.models.loading.load_model", refuse)


# ---- print sizes ----


def test_print_sizes_in_pixels():
    assert print_pixels("24x36in", 300) == (10800, 7200)  # (H, W)
    assert print_pixels("24 x 36 IN", 300) == print_pixels("24inx36in", 300) == (10800, 7200)
    assert print_pixels("A2", 300) == print_pixels("420x594mm", 300) == (7016, 4961)
    assert print_pixels("a2", 300, landscape=True) == (4961, 7016)
    assert print_pixels("36x24in", 300) == print_pixels("24x36in", 300, landscape=True) == (7200, 10800)
    assert print_pixels("61x91.5cm", 300) == (10807, 7205)  # 7204.72, 10807.09
    assert print_pixels("A4", 300) == (3508, 2480) and print_pixels("A0", 150) == (7022, 4967)
    # Exact arithmetic, halves rounded up: 0.5 in and 1.5 in at 3 dpi are 1.5 and 4.5 px.
    assert print_pixels("0.5x1.5in", 3) == (5, 2)
    assert millimetres_to_pixels(Fraction(254, 10), 7) == 7


@pytest.mark.parametrize(
    "text, dpi, message",
    [
        ("A9", 300, "--print 'A9' is not a print size"),
        ("24x36ft", 300, "is not a print size"),
        ("24x36", 300, "is not a print size"),
        ("24x0in", 300, "has a zero side"),
        ("24cmx36in", 300, "mixes units cm and in"),
        ("A2", 0, "--dpi 0 must be a positive"),
        ("A2", -300, "--dpi -300 must be a positive"),
        ("300x300in", 300, "90000x90000 px, more than the 65536 px a side"),
        ("0.1x0.1mm", 10, "less than one pixel"),
    ],
)
def test_bad_print_sizes_are_named(text, dpi, message):
    with pytest.raises(ConfigError, match=message):
        print_pixels(text, dpi, max_side=65536)


def test_aspects():
    assert parse_aspect("2:3") == (3, 2) and parse_aspect("16:9") == (9, 16) and parse_aspect("4:6") == (3, 2)
    assert parse_aspect("1.85:1") == (20, 37)
    for bad in ("2:0", "0:3", "abc", "2:3:4", "-2:3", ""):
        with pytest.raises(ConfigError, match="--aspect"):
            parse_aspect(bad)


# ---- buckets and stages ----


def test_trained_buckets_are_sdxls_and_sd15s():
    sdxl = trained_buckets(1024)
    assert len(sdxl) == 41 and (1216, 832) in sdxl and (832, 1216) in sdxl and (1024, 1024) in sdxl
    assert {(512, 2048), (704, 1344), (960, 1024), (2048, 512)} <= set(sdxl)
    assert all(0.9 * 1024**2 <= h * w <= 1024**2 and h % 64 == 0 == w % 64 for h, w in sdxl)
    assert set(trained_buckets(512)) == {
        (512, 512), (448, 576), (576, 448), (384, 640), (640, 384), (320, 768), (768, 320), (256, 960),
        (960, 256), (256, 1024), (1024, 256),
    }  # fmt: skip
    assert nearest_bucket((3, 2), 1024) == (1216, 832)  # 2:3 portrait: 832x1216
    assert nearest_bucket((9, 16), 1024) == (768, 1344)  # 16:9
    assert nearest_bucket((10800, 7200), 1024) == (1216, 832)
    assert nearest_bucket((1, 1), 1024) == (1024, 1024) and nearest_bucket((3, 2), 512) == (640, 384)


def test_sizes_that_are_native_multiples_keep_todays_stages():
    for native in (128, 512, 1024):
        for rule in ("double", "direct"):
            for h in range(1, 9):
                for w in range(1, 9):
                    target = (h * native, w * native)
                    assert fitted_stages(target, native, rule) == stages_for_target(target, native, rule)


def test_stages_of_any_size():
    assert fitted_stages((10800, 7200), 1024, "double") == POSTER
    assert fitted_stages((10800, 7200), 1024, "direct") == (POSTER[0], POSTER[-1])
    assert crop_offsets(POSTER[-1], (10800, 7200)) == (8, 16)
    assert fitted_stages((7016, 4961), 1024, "double") == (
        (1152, 832),
        (2304, 1664),
        (4608, 3328),
        (7040, 4992),
    )
    assert fitted_stages((1500, 1000), 1024, "double") == ((1216, 832), (1536, 1024))
    # Within the base: the base alone, cut; a stage above the base is at least native on each side.
    assert fitted_stages((700, 1100), 1024, "double") == ((768, 1280),)
    assert fitted_stages((1400, 900), 1024, "double") == ((1216, 832), (1408, 1024))
    assert fitted_stages((150, 100), 128, "double") == ((128, 128), (192, 128))


def test_crop_boxes_are_centred():
    assert crop_offsets((11, 10), (8, 7)) == (1, 1)  # the odd leftover row and column at the bottom, right
    assert crop_offsets((64, 64), (64, 64)) == (0, 0)
    with pytest.raises(ValueError):
        crop_offsets((64, 64), (65, 10))
    assert aspect_box((2432, 1664), (3, 2)) == (2432, 1621) and aspect_box((1664, 2432), (2, 3)) == (
        1621,
        2432,
    )
    assert aspect_box((1216, 832), (1, 1)) == (832, 832)


# ---- the config ----


def _config(tmp_path, native=1024, **values):
    return build_config({"prompt": "a fox", "output": str(tmp_path / "o.png"), **values}, native)


def test_config_of_print_size_aspect_and_size(tmp_path):
    c = _config(tmp_path, print_size="24x36in")
    assert c.stages == POSTER and c.image_size == (10800, 7200) and c.dpi == 300 and c.fit == "crop"
    assert _config(tmp_path, print_size="A2", dpi=150, landscape=True).image_size == (2480, 3508)
    c = _config(tmp_path, aspect="2:3")  # the 2:3 bucket times --scale (2), cut to 2:3
    assert c.stages == ((1216, 832), (2432, 1664)) and c.image_size == (2432, 1621)
    c = _config(tmp_path, aspect="2:3", scale=1)
    assert c.stages == ((1216, 832),) and c.image_size == (1216, 811)
    c = _config(tmp_path, size="4096x2048")
    assert c.stages == ((512, 1024), (1024, 2048), (2048, 4096)) and c.image_size is None
    # A recipe keeps the stages and the output size.
    recipe = json.loads(json.dumps(dataclasses.asdict(_config(tmp_path, size="1000x1500", fit="resize"))))
    again = build_config(recipe_values(recipe), 1024)
    assert (again.stages, again.image_size, again.fit) == (
        ((1216, 832), (1536, 1024)),
        (1500, 1000),
        "resize",
    )


@pytest.mark.parametrize(
    "values, message",
    [
        ({"size": "1000x1500", "print_size": "A2"}, "give one of --size, --print and --aspect"),
        ({"print_size": "A2", "aspect": "2:3"}, "give one of --size, --print and --aspect"),
        ({"size": "1000x1500", "landscape": True}, "--landscape applies to --print"),
        ({"aspect": "2:0"}, "--aspect '2:0' has a zero side"),
        ({"aspect": "10:1"}, "--aspect 10:1 is beyond the model's trained shapes"),
        ({"size": "9000x1000"}, "--size 9000x1000 is beyond the model's trained shapes"),
        ({"size": "0x1000"}, "must be positive"),
        ({"stages": "1024,2048", "size": "3000x3000"}, "3000x3000 does not fit in the last stage 2048x2048"),
        ({"print_size": "A2", "dpi": 0}, "--dpi 0 must be a positive"),
        ({"size": "1000x1500", "fit": "stretch"}, "--fit 'stretch' is not one of crop, resize"),
    ],
)
def test_bad_size_values_are_named(values, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **values)


# ---- the outputs layer ----


def _smooth(height, width):
    y, x = np.mgrid[0:height, 0:width]
    wave = np.sin(y / 9.0) * np.cos(x / 13.0)
    return np.round(127 + 100 * np.stack([wave, np.cos(y / 7.0 + x / 5.0), -wave], -1)).astype(np.uint8)


def _split(pixels, cuts):
    edges = [0, *cuts, len(pixels)]
    return [pixels[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@pytest.mark.parametrize("out_size", [(300, 250), (200, 257), (301, 100), (150, 90)])
def test_streamed_lanczos_is_the_same_for_any_strips_and_close_to_pillows(out_size):
    pixels = _smooth(301, 257)
    whole = np.concatenate(list(lanczos_strips([pixels], (301, 257), out_size)))
    streamed = np.concatenate(
        list(lanczos_strips(iter(_split(pixels, [1, 7, 7, 64, 130])), (301, 257), out_size))
    )
    assert whole.shape == (*out_size, 3) and np.array_equal(whole, streamed)
    pillow = np.asarray(Image.fromarray(pixels).resize(out_size[::-1], Image.LANCZOS))
    assert np.abs(whole.astype(int) - pillow).max() <= 1


def test_centre_crop_of_strips():
    pixels = np.random.default_rng(0).integers(0, 256, (301, 257, 3), dtype=np.uint8)
    strips = list(centre_cropped(iter(_split(pixels, [1, 7, 7, 64, 130])), (301, 257), (200, 250)))
    assert np.array_equal(np.concatenate(strips), pixels[50:250, 3:253])
    with pytest.raises(ValueError, match="hold 300 rows"):
        list(centre_cropped(iter([pixels[:300]]), (301, 257), (200, 250)))


# ---- the command ----


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--print", "A9"], "--print 'A9' is not a print size"),
        (["--print", "24x36ft"], "is not a print size"),
        (["--print", "A2", "--dpi", "0"], "--dpi 0 must be a positive"),
        (["--print", "300x300in"], "more than the 65536 px a side"),
        (["--aspect", "2:0"], "--aspect '2:0' has a zero side"),
        (["--aspect", "abc"], "--aspect 'abc' is not an aspect ratio"),
        (["--landscape"], "--landscape applies to --print"),
    ],
)
def test_bad_sizes_exit_2_before_loading(argv, message, no_loading, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in (["render", "x"], ["plan"]):
        assert cli.main([*command, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("freescale: error: ") and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_plan_shows_the_stages_and_the_output(capsys):
    assert cli.main(["plan", "--print", "24x36in", "--dpi", "300"]) == 0
    text = capsys.readouterr().out
    for size in ("832x1216", "1664x2432", "3328x4864", "6656x9728", "7232x10816"):
        assert size in text
    assert (
        "output: 7200x10800, the centre of the last stage 7232x10816 (left 16, top 8), tagged 300 dpi" in text
    )
    assert cli.main(["plan", "--print", "A2", "--fit", "resize", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["size"] for s in data["stages"]] == [[832, 1152], [1664, 2304], [3328, 4608], [4992, 7040]]
    assert data["output"] == {"size": [4961, 7016], "last_stage": [4992, 7040], "fit": "resize", "dpi": 300}


def test_the_last_stage_is_resized_with_fit_resize_and_other_stages_pass(tmp_path):
    from freescale.outputs.fitted_strips import fitted

    config = _config(tmp_path, native=128, print_size="1x1.5in", dpi=100, fit="resize", save_stages=True)
    assert config.stages == ((128, 128), (192, 128)) and config.image_size == (150, 100)
    pixels = _smooth(192, 128)
    strips, size = fitted(iter(_split(pixels, [5, 100])), config, 1)
    assert size == (150, 100)
    assert np.array_equal(
        np.concatenate(list(strips)), np.concatenate(list(lanczos_strips([pixels], (192, 128), size)))
    )
    base = [pixels[:128]]
    assert fitted(base, config, 0) == (base, (128, 128))


def test_a_print_render_is_the_centre_of_the_last_stage_with_the_dpi_tag(tmp_path):
    """1 x 1.5 in at 100 dpi on the tiny model (native 128): 100x150 px from stages 128x128, 128x192."""
    fast = ["a red fox", "--steps", "2", "--seed", "3", "--quiet"]
    full, cut = tmp_path / "full.png", tmp_path / "cut.tif"
    assert cli.main(["render", *fast, "--stages", "128,128x192", "-o", str(full)]) == 0
    assert cli.main(["render", *fast, "--print", "1x1.5in", "--dpi", "100", "-o", str(cut)]) == 0
    last = np.asarray(Image.open(full))
    assert last.shape == (192, 128, 3)
    with tifffile.TiffFile(cut) as t:
        page = t.pages[0]
        assert page.tags["XResolution"].value == (100, 1) and page.tags["ResolutionUnit"].value == 2
        pixels = page.asarray()
        recipe = json.loads(page.description)
    assert recipe["image_size"] == [150, 100] and recipe["stages"] == [[128, 128], [192, 128]]
    assert pixels.shape == (150, 100, 3) and np.array_equal(pixels, last[21:171, 14:114])
