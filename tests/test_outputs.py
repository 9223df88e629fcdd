"""Print-ready outputs: recipes that reproduce a render, 16-bit tiled TIFF with DPI/ICC/pyramid."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from freescale.cli import commands as cli
from freescale.outputs import image_output
from freescale.outputs.image_output import OutputOptions, save_image

FAST = ["--steps", "3", "--scale", "4", "--quiet"]


def test_recipe_reproduces_the_image(tmp_path):
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    assert (
        cli.main(["render", "a red fox", *FAST, "--seed", "11", "--cosine-scale", "1.5", "-o", str(first)])
        == 0
    )
    recipe = json.loads((tmp_path / "a.png.json").read_text())
    assert (
        recipe["seed"] == 11 and recipe["cosine_scale"] == 1.5 and recipe["model_identity"] == "tiny(seed=0)"
    )
    assert recipe["stages"] == [[128, 128], [256, 256], [512, 512]] and "freescale_version" in recipe
    assert (
        cli.main(["render", "--from-recipe", str(tmp_path / "a.png.json"), "-o", str(again), "--quiet"]) == 0
    )
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))


def test_sixteen_bit_tiff_with_print_tags(tmp_path):
    png, tif = tmp_path / "a.png", tmp_path / "a.tif"
    assert cli.main(["render", "a red fox", *FAST, "-o", str(png)]) == 0
    assert cli.main(["render", "a red fox", *FAST, "-o", str(tif), "--bit-depth", "16", "--dpi", "300"]) == 0
    with tifffile.TiffFile(tif) as t:
        page = t.pages[0]
        pixels = page.asarray()
        assert pixels.dtype == np.uint16 and pixels.shape == (512, 512, 3)
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (512, 512)
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.tags["XResolution"].value == (300, 1) and page.tags["ResolutionUnit"].value == 2
        assert len(page.tags["InterColorProfile"].value) > 100
        assert json.loads(page.description)["bit_depth"] == 16
        assert not t.is_bigtiff
    # 16 bits come from the VAE's float output: more levels than 8 bits, and the same picture.
    eight = np.asarray(Image.open(png)).astype(int)
    assert len(np.unique(pixels)) > len(np.unique(eight))
    assert np.abs(pixels.astype(int) / 257 - eight).max() <= 0.5 + 1e-9


def test_pyramid_and_bigtiff_only_when_needed(tmp_path, monkeypatch):
    pixels = (np.arange(1100 * 1300 * 3) % 65536).astype(np.uint16).reshape(1100, 1300, 3)
    save_image(pixels, str(tmp_path / "p.tif"), options=OutputOptions(pyramid=True))
    with tifffile.TiffFile(tmp_path / "p.tif") as t:
        levels = t.series[0].levels
        assert [level.shape for level in levels] == [(1100, 1300, 3), (550, 650, 3), (275, 325, 3)]
        assert not t.is_bigtiff
    monkeypatch.setattr(image_output, "BIGTIFF_ABOVE", pixels.nbytes - 1)
    save_image(pixels, str(tmp_path / "big.tif"))
    with tifffile.TiffFile(tmp_path / "big.tif") as t:
        assert t.is_bigtiff and np.array_equal(t.asarray(), pixels)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["x", "--bit-depth", "16", "-o", "o.png"], "--bit-depth 16 needs a .tif/.tiff output"),
        (["x", "--pyramid", "-o", "o.jpg"], "--pyramid needs a .tif/.tiff output"),
        (["x", "--dpi", "0"], "--dpi 0 must be between"),
        (["--from-recipe", "missing.json"], "--from-recipe missing.json: not a readable JSON recipe"),
    ],
)
def test_bad_output_options_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render", *argv]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_sidecar_blocks_a_render(tmp_path, capsys):
    (tmp_path / "a.png.json").write_text("{}")
    assert cli.main(["render", "x", *FAST, "-o", str(tmp_path / "a.png")]) == 2
    assert "a.png.json' already exists" in capsys.readouterr().err
