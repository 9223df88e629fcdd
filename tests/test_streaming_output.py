"""Writing images strip by strip (TIFF, PNG, JPEG) with bounded memory, and the VAE decode as row strips."""

import json
import struct
import tracemalloc
import zlib
from itertools import accumulate

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from freescale.errors import ConfigError
from freescale.method.tiled_vae import decode_row_strips
from freescale.method.vae_transitions import decode_band, decode_band_strips, pixel_strips, to_pixels
from freescale.outputs.image_output import OutputOptions, pyramid_levels, save_image, srgb_profile
from freescale.outputs.streaming_output import write_image_strips
from freescale.tiling.vae_tiles import contributing_tiles, decode_axis_tiles

RECIPE = {"prompt": "a red fox", "seed": 7}


def _image(height: int, width: int, dtype, seed: int = 0) -> np.ndarray:
    """Gradients with noisy rows: compressible, and every filter and tile sees varied data."""
    top = 256 if dtype == np.uint8 else 65536
    pixels = (np.add.outer(np.arange(height), 3 * np.arange(width))[..., None] * [1, 5, 11]) % top
    pixels[::9] = np.random.default_rng(seed).integers(0, top, pixels[::9].shape)
    return pixels.astype(dtype)


def _strips(pixels: np.ndarray, heights: list[int]):
    """Rows of `pixels` in strips of the given heights, repeated until the image is covered."""
    top, k = 0, 0
    while top < len(pixels):
        yield pixels[top : top + heights[k % len(heights)]].copy()
        top += heights[k % len(heights)]
        k += 1


# ---- TIFF ----


# 1301 rows: the main level's odd last row is dropped; 1302: level 1's (651 rows) is.
@pytest.mark.parametrize(("dtype", "height"), [(np.uint8, 1301), (np.uint16, 1302)])
def test_tiff_from_strips_with_pyramid_and_dpi(tmp_path, dtype, height):
    pixels = _image(height, 1100, dtype)
    path = tmp_path / "a.tif"
    options = OutputOptions(dpi=300, pyramid=True)
    write_image_strips(
        _strips(pixels, [37, 700, 0, 1]), (height, 1100), dtype, str(path), recipe=RECIPE, options=options
    )
    with tifffile.TiffFile(path) as t:
        page = t.pages[0]
        assert np.array_equal(page.asarray(), pixels) and page.dtype == dtype
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (512, 512)
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.tags["InterColorProfile"].value == srgb_profile()
        assert page.tags["XResolution"].value == (300, 1) and page.tags["ResolutionUnit"].value == 2
        assert json.loads(page.description) == RECIPE and not t.is_bigtiff
        levels = [level.asarray() for level in t.series[0].levels[1:]]
    expected = pyramid_levels(pixels)
    assert [level.shape for level in levels] == [(height // 2, 550, 3), (325, 275, 3)]
    assert all(np.array_equal(a, b) for a, b in zip(levels, expected, strict=True))
    assert json.loads((tmp_path / "a.tif.json").read_text()) == RECIPE
    # One writer: the whole image as one strip gives the same file.
    save_image(pixels, str(tmp_path / "b.tif"), recipe=RECIPE, options=options)
    assert (tmp_path / "b.tif").read_bytes() == path.read_bytes()


def test_tiff_strips_of_tile_height_without_options(tmp_path):
    pixels = _image(1024, 600, np.uint8, seed=1)
    write_image_strips(_strips(pixels, [512]), (1024, 600), np.uint8, str(tmp_path / "a.tif"))
    with tifffile.TiffFile(tmp_path / "a.tif") as t:
        page = t.pages[0]
        assert np.array_equal(page.asarray(), pixels) and len(t.series[0].levels) == 1
        assert "XResolution" not in page.tags or page.tags["ResolutionUnit"].value == 1
    assert not (tmp_path / "a.tif.json").exists()


# ---- PNG ----


@pytest.mark.parametrize("recipe", [RECIPE, {"prompt": "un renard roux \u2014 \u72d0"}])  # tEXt; iTXt
def test_png_from_strips_reads_back_in_pillow(tmp_path, recipe):
    pixels = _image(300, 257, np.uint8)
    path = tmp_path / "a.png"
    write_image_strips(_strips(pixels, [37, 1, 100]), (300, 257), np.uint8, str(path), recipe=recipe,
                       options=OutputOptions(dpi=300))  # fmt: skip
    with Image.open(path) as image:
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), pixels)
        assert image.info["icc_profile"] == srgb_profile()
        assert image.info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert json.loads(image.text["freescale-recipe"]) == recipe
    # The same metadata as Pillow's own writer gives.
    save = Image.fromarray(pixels).save
    save(tmp_path / "pil.png", icc_profile=srgb_profile(), dpi=(300, 300))
    with Image.open(tmp_path / "pil.png") as reference:
        assert reference.info["dpi"] == Image.open(path).info["dpi"]


def _read_png16(data: bytes) -> np.ndarray:
    """A minimal decoder for the 16-bit RGB files this writer makes (all five filter types)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        header = struct.unpack(">IIBBBBB", body) if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color = header[:4]
    assert (depth, color) == (16, 2)
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * 6)
    rows, above = [], [0] * (width * 6)
    for line in raw:
        kind, row = line[0], [int(v) for v in line[1:]]
        for i, v in enumerate(row):
            a, b = (row[i - 6] if i >= 6 else 0), above[i]
            c = above[i - 6] if i >= 6 else 0
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            paeth = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            row[i] = (v + [0, a, b, (a + b) // 2, paeth][kind]) % 256
        rows.append(row)
        above = row
    return np.array(rows, np.uint8).view(">u2").reshape(height, width, 3).astype(np.uint16)


def test_sixteen_bit_png(tmp_path):
    pixels = _image(23, 41, np.uint16)
    path = tmp_path / "a.png"
    write_image_strips(_strips(pixels, [5, 11]), (23, 41), np.uint16, str(path))
    assert np.array_equal(_read_png16(path.read_bytes()), pixels)
    with Image.open(path) as image:  # Pillow reads 48-bit RGB as 8-bit: the high bytes
        assert np.array_equal(np.asarray(image.convert("RGB")), (pixels >> 8).astype(np.uint8))


# ---- JPEG ----


def test_jpeg_from_strips(tmp_path):
    pixels = np.full((200, 150, 3), (200, 30, 90), np.uint8)
    path = tmp_path / "a.jpg"
    write_image_strips(_strips(pixels, [64]), (200, 150), np.uint8, str(path), recipe=RECIPE)
    with Image.open(path) as image:
        assert image.size == (150, 200) and np.abs(np.asarray(image).astype(int) - pixels).max() <= 3
        assert json.loads(image.info["comment"]) == RECIPE and image.info["icc_profile"] == srgb_profile()
    with pytest.raises(ConfigError, match="16-bit"):
        write_image_strips([], (2, 2), np.uint16, str(tmp_path / "b.jpg"))


# ---- atomicity and checks ----


@pytest.mark.parametrize("name", ["a.tif", "a.png", "a.jpg"])
def test_failure_midway_leaves_nothing(tmp_path, name):
    pixels = _image(1100, 300, np.uint8)

    def failing():
        yield from _strips(pixels[:600], [200])
        raise RuntimeError("decode failed")

    options = OutputOptions(pyramid=name.endswith(".tif"))
    with pytest.raises(RuntimeError, match="decode failed"):
        write_image_strips(
            failing(), (1100, 300), np.uint8, str(tmp_path / name), recipe=RECIPE, options=options
        )
    for strips, error in [
        (_strips(pixels[:1000], [300]), "1000 rows"),
        (iter([pixels, pixels[:1]]), "more"),
    ]:
        with pytest.raises(ValueError, match=error):
            write_image_strips(strips, (1100, 300), np.uint8, str(tmp_path / name), options=options)
    with pytest.raises(ValueError, match="strip must be"):
        write_image_strips([pixels[:, :299]], (1100, 300), np.uint8, str(tmp_path / name))
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_without_overwrite(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"precious")
    pulled = []

    def strips():
        pulled.append(1)
        yield np.zeros((4, 4, 3), np.uint8)

    with pytest.raises(ConfigError, match="already exists"):
        write_image_strips(strips(), (4, 4), np.uint8, str(path))
    assert path.read_bytes() == b"precious" and not pulled  # refused before any decoding
    write_image_strips(strips(), (4, 4), np.uint8, str(path), overwrite=True)
    assert np.array_equal(np.asarray(Image.open(path)), np.zeros((4, 4, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# ---- bounded memory ----


@pytest.mark.parametrize("name", ["big.tif", "big.png"])
def test_peak_memory_is_a_few_tile_rows(tmp_path, name):
    height, width, rows = 8192, 2048, 128  # 50 MB
    line = (np.arange(width * 3) % 251).astype(np.uint8).reshape(width, 3)

    def strips():
        for top in range(0, height, rows):  # each strip made on the fly, as the VAE decode makes them
            strip = np.empty((rows, width, 3), np.uint8)
            strip[:] = line
            strip[..., 0] += (np.arange(top, top + rows) % 256).astype(np.uint8)[:, None]
            yield strip

    tracemalloc.start()
    try:
        write_image_strips(strips(), (height, width), np.uint8, str(tmp_path / name))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    image_bytes, strip_bytes = height * width * 3, rows * width * 3
    tile_row = 512 * width * 3  # TIFF's one row of tiles; its compressed tiles in flight are at most as much
    # Two strips: the caller's generator makes the next before it lets go of the last.
    assert peak < image_bytes / 4 and peak < 2 * tile_row + 2 * strip_bytes + 2**20, peak
    with Image.open(tmp_path / name) as image:
        assert image.size == (width, height)


# ---- the VAE decode as row strips ----


@pytest.fixture(scope="module")
def vae():
    from freescale.models.tiny_sdxl import _vae

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small convolutions: one thread is faster on a shared 2-core machine
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _vae().eval()  # the tiny model's VAE alone: building the whole pipeline takes seconds
    model.enable_tiling()  # only the diffusers reference uses this flag
    yield model
    torch.set_num_threads(threads)


def test_decode_row_strips_match_diffusers_and_decode_each_tile_once(vae):
    z = torch.randn(1, 4, 48, 20, generator=torch.Generator().manual_seed(3))  # 384 x 160 px: 4 x 2 tiles
    with torch.no_grad():
        reference = vae.decode(z).sample
    tiles = decode_axis_tiles(48, vae.tile_latent_min_size, vae.tile_sample_min_size)
    calls = []
    handle = vae.decoder.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        for rows in [(0, 384), (90, 130), (96, 97), (300, 384), (383, 384)]:
            calls.clear()
            strips, calls_at_strip = [], []
            for strip in decode_row_strips(vae, z, rows):
                strips.append(strip)
                calls_at_strip.append(len(calls))
            assert torch.equal(torch.cat(strips, dim=2), reference[..., rows[0] : rows[1], :]), rows
            t0, t1 = contributing_tiles(tiles, rows)
            assert len(calls) == (t1 - t0) * 2, rows  # every needed tile once, none twice
            # Each strip is one tile row's kept rows, handed over before the next tile row is decoded.
            ends = [t.out_start + t.kept for t in tiles[t0:t1] if t.out_start + t.kept > rows[0]]
            assert [rows[0] + n for n in accumulate(s.shape[2] for s in strips)] == [*ends[:-1], rows[1]]
            sources = t1 - t0 - len(strips)  # leading tile rows decoded only as blend sources
            assert calls_at_strip == [2 * (sources + k + 1) for k in range(len(strips))], rows
    finally:
        handle.remove()


def test_pixel_strips_equal_the_decoded_band(vae):
    latents = torch.randn(1, 4, 40, 24, generator=torch.Generator().manual_seed(4))
    band = decode_band(vae, latents, (50, 250))
    strips = list(decode_band_strips(vae, latents, (50, 250)))
    assert len(strips) > 1 and torch.equal(torch.cat(strips, dim=2), band)
    pixels = np.concatenate(list(pixel_strips(vae, latents, (50, 250), 16)))
    assert np.array_equal(pixels, to_pixels(band, 16))
