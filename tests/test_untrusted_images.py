"""Untrusted --image and --mask files (issue 15.4): bombs, truncated files and unsupported modes are one
line and exit 2 before any model loads; 16-bit images are read in full; a mask's alpha is the mask; a
mask is held packed and resized exactly as a nearest resize of the whole mask."""

import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from freescale import cli
from freescale.config import input_images
from freescale.errors import ConfigError
from freescale.method import vae_transitions
from freescale.method.detail_mask import cosine_exponent, load_binary_mask
from freescale.outputs.streaming_output import write_image_strips

FAST = ["--steps", "2", "--scale", "2", "--seed", "3", "--quiet"]  # stages 128x128, 256x256


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr("freescale.models.loading.load_model", refuse)


def refused(argv, path, capsys, message) -> None:
    """`freescale render` exits 2 with one line that names the file and says `message`."""
    assert cli.main(["render", "x", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("freescale: error: ") and str(path) in err and message in err, err


def png_header_only(path, width: int, height: int) -> None:
    """A PNG that claims a size in its header and holds almost no data (a decompression bomb's start)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)))


def noise(size, channels=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)


def truncated(path, tmp_path, name):
    data = path.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize("flag", ["--image", "--mask"])
def test_a_decompression_bomb_is_refused_from_its_header(flag, tmp_path, no_loading, capsys):
    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, 100_000, 100_000)
    refused([flag, str(bomb)], bomb, capsys, "pixels allowed")


def test_our_pixel_limit_is_checked_below_pillows(tmp_path, no_loading, capsys, monkeypatch):
    monkeypatch.setattr(input_images, "MAX_INPUT_PIXELS", 64 * 64)
    mask = tmp_path / "mask.png"
    Image.fromarray(noise(128, 1)[..., 0]).save(mask)
    refused(["--mask", str(mask)], mask, capsys, "128x128, more than the 4096 pixels allowed")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("flag", ["--image", "--mask"])
def test_a_truncated_file_is_refused_before_loading(flag, suffix, tmp_path, no_loading, capsys):
    whole = tmp_path / f"whole{suffix}"
    Image.fromarray(noise(128)).save(whole)
    cut = truncated(whole, tmp_path, f"cut{suffix}")
    refused([flag, str(cut)], cut, capsys, "is not a readable image")


def test_a_large_truncated_mask_is_verified_then_one_line_when_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(input_images, "DECODE_WHEN_CHECKED_PIXELS", 16)
    whole = tmp_path / "whole.png"
    Image.fromarray(noise(64)).save(whole)
    cut = truncated(whole, tmp_path, "cut.png")
    for check in (lambda: input_images.check_image(str(cut), "--mask"), lambda: load_binary_mask(str(cut))):
        with pytest.raises(ConfigError, match=f"--mask {cut} is not a readable image"):
            check()


@pytest.mark.parametrize("mode, suffix", [("CMYK", ".jpg"), ("F", ".tif"), ("CMYK", ".tif")])
def test_an_unsupported_mode_is_refused(mode, suffix, tmp_path, no_loading, capsys):
    path = tmp_path / f"odd{suffix}"
    Image.new(mode, (128, 128)).save(path)
    with Image.open(path) as image:
        stored = image.mode
    refused(["--image", str(path)], path, capsys, f"has image mode {stored!r}")


def test_eight_bit_rgb_pixels_are_unchanged(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(noise(32)).save(path)
    with Image.open(path) as image:
        pixels = vae_transitions.from_pil(image, "cpu", torch.float32)
    before = torch.from_numpy(noise(32).astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    assert torch.equal(pixels, before)


def test_sixteen_bit_gray_is_scaled_by_65535(tmp_path):
    values = np.array([[0, 1, 255, 256], [1000, 32768, 65534, 65535]], np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    with input_images.open_image(str(path), "--image") as image:
        assert image.mode.startswith("I")
        pixels = vae_transitions.from_pil(image, "cpu", torch.float32)
    expected = torch.from_numpy(values.astype(np.float32) / 65535.0) * 2 - 1
    assert pixels.shape == (1, 3, 2, 4)
    assert all(torch.equal(pixels[0, c], expected) for c in range(3))


def test_sixteen_bit_rgb_png_is_read_in_full(tmp_path):
    values = np.random.default_rng(1).integers(0, 65536, (23, 17, 3)).astype(np.uint16)
    path = tmp_path / "rgb16.png"
    write_image_strips(iter([values]), (23, 17), np.uint16, str(path))
    with input_images.open_image(str(path), "--image") as image:
        pixels = vae_transitions.from_pil(image, "cpu", torch.float32)
    expected = torch.from_numpy(values.astype(np.float32) / 65535.0).permute(2, 0, 1)[None] * 2 - 1
    assert torch.equal(pixels, expected)


def test_a_mask_alpha_channel_is_the_mask(tmp_path):
    alpha = (noise(40, 1)[..., 0] > 128).astype(np.uint8) * 200
    rgba = np.zeros((40, 40, 4), np.uint8)  # black everywhere: without alpha, no detail at all
    rgba[..., 3] = alpha
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(np.stack([np.full_like(alpha, 255), alpha], -1), "LA").save(tmp_path / "la.png")
    for name in ("rgba.png", "la.png"):
        mask = load_binary_mask(str(tmp_path / name)).resized((40, 40))
        assert torch.equal(mask[0, 0], torch.from_numpy(alpha != 0).double())


def test_a_mask_without_alpha_is_its_nonzero_gray(tmp_path):
    rgb = noise(24) // 64  # many dark colours whose luma rounds to 0
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    gray16 = np.array([[0, 1], [256, 65535]], np.uint16)  # Pillow's 8-bit L would clip, not drop, these
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    rgb_mask = load_binary_mask(str(tmp_path / "rgb.png")).resized((24, 24))
    expected = np.asarray(Image.fromarray(rgb).convert("L")) != 0
    assert torch.equal(rgb_mask[0, 0], torch.from_numpy(expected).double())
    assert load_binary_mask(str(tmp_path / "g16.png")).resized((2, 2))[0, 0].tolist() == [[0, 1], [1, 1]]


@pytest.mark.parametrize("height, width", [(8, 8), (37, 53), (64, 64), (200, 131), (1000, 999)])
@pytest.mark.parametrize("grid", [(8, 8), (16, 24), (32, 32), (64, 64), (96, 40)])
def test_a_packed_mask_resizes_as_a_nearest_resize_of_the_whole(height, width, grid, tmp_path):
    values = (np.random.default_rng(height * width).random((height, width)) > 0.5).astype(np.uint8) * 255
    path = tmp_path / "mask.png"
    Image.fromarray(values).save(path)
    mask = load_binary_mask(str(path))
    assert mask.bits.nbytes == height * ((width + 7) // 8)  # 1 bit a pixel, not a float a pixel
    whole = torch.from_numpy((values != 0).astype(np.float32))[None, None]
    reference = F.interpolate(whole, size=grid, mode="nearest").double()
    assert torch.equal(mask.resized(grid), reference)
    exponent = cosine_exponent(mask, grid, 3.0, 0.5)
    assert torch.equal(exponent, reference * 3.0 + (1 - reference) * 0.5)


def test_a_full_mask_renders_as_no_mask_and_alpha_counts(tmp_path):
    full = np.zeros((64, 64, 4), np.uint8)
    full[..., 3] = 255  # only the alpha says "detail everywhere"
    Image.fromarray(full).save(tmp_path / "full.png")
    plain, masked = tmp_path / "plain.png", tmp_path / "masked.png"
    assert cli.main(["render", "a fox", *FAST, "-o", str(plain)]) == 0
    assert cli.main(["render", "a fox", *FAST, "-o", str(masked), "--mask", str(tmp_path / "full.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(masked)))


def test_a_sixteen_bit_gray_base_image_renders(tmp_path):
    ramp = (np.arange(128 * 128, dtype=np.uint32).reshape(128, 128) * 4).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "base16.png")
    out = tmp_path / "out.png"
    assert cli.main(["render", "a fox", *FAST, "-o", str(out), "--image", str(tmp_path / "base16.png")]) == 0
    assert Image.open(out).size == (256, 256)
