"""`freescale upscale`: the user's own image (any size, mode, orientation, profile) to an exact size on the
tiny model, its alpha, bit depth and ICC profile kept, a caption model's prompt, bad input exiting 2 first."""

import io
import itertools
import json
import struct
from fractions import Fraction

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from freescale.cli import commands as cli
from freescale.config.input_images import exact_values
from freescale.config.user_image import base_stage_pixels, oriented, read_user_image, resized_unit_rgb
from freescale.outputs.image_output import OutputOptions, srgb_profile
from freescale.outputs.lanczos_strips import lanczos_strips
from freescale.outputs.streaming_output import write_image_strips
from freescale.outputs.upscale_output import gray_strips, with_alpha
from freescale.tiling.upscale_stages import cover_size, scaled_size, upscale_stages

FAST = ["--steps", "1", "--seed", "5", "--quiet"]


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr("freescale.models.loading.load_model", refuse)
    monkeypatch.setattr("freescale.models.image_captions.caption_image", refuse)


def _pattern(height: int, width: int, channels: int, dtype=np.uint8) -> np.ndarray:
    full = np.iinfo(dtype).max
    yy, xx = np.mgrid[:height, :width]
    planes = [xx / (width - 1), yy / (height - 1), (xx + yy) / (width + height - 2), (xx * yy) % 7 / 6]
    return np.round(np.stack(planes[:channels], axis=-1) * full).astype(dtype)


def _disc_alpha(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    radius = min(height, width) * 0.4
    return np.where((yy - height / 2 + 0.5) ** 2 + (xx - width / 2 + 0.5) ** 2 < radius**2, 255, 0).astype(
        np.uint8
    )


def _tagged_rgb_profile() -> bytes:
    """A valid RGB profile that is not the writer's own sRGB bytes (another creator in the header)."""
    profile = bytearray(srgb_profile())
    profile[80:84] = b"test"
    return bytes(profile)


# ---- the stage plan (pure geometry) ----


def test_stages_from_the_input():
    # 96x70 (W x H) to 2 x 1.5 in at 100 dpi (200x150): the tiny model's square base, the input's aspect
    # covering 200x150 (206x150) rounded up to 256x192.
    assert cover_size((70, 96), (150, 200)) == (150, 206)
    assert upscale_stages((70, 96), (150, 200), 128, "double", "crop") == ((128, 128), (192, 256))
    assert upscale_stages((70, 96), (150, 200), 128, "double", "resize") == ((128, 128), (192, 256))
    # SDXL, a 3000x2000 photo at 3x: the trained 1216x832 base, doubling, the last stage holding 9000x6000.
    target = scaled_size((2000, 3000), Fraction(3))
    assert target == (6000, 9000)
    assert upscale_stages((2000, 3000), target, 1024, "double", "crop") == (
        (832, 1216), (1664, 2432), (3328, 4864), (6016, 9024),
    )  # fmt: skip
    assert upscale_stages((2000, 3000), target, 1024, "direct", "crop") == ((832, 1216), (6016, 9024))
    assert scaled_size((70, 96), Fraction(3, 2)) == (105, 144)
    # A portrait print of a landscape input keeps the input's aspect (cut), or takes the print's (resize).
    assert cover_size((2000, 3000), (10800, 7200)) == (10800, 16200)
    assert upscale_stages((2000, 3000), (10800, 7200), 1024, "double", "resize")[-1] == (10816, 7232)
    for (ih, iw), (th, tw) in itertools.product([(70, 96), (301, 97), (1000, 1000)], repeat=2):
        ch, cw = cover_size((ih, iw), (th, tw))
        assert ch >= th and cw >= tw and (ch == th or cw == tw)
        assert abs(ch * iw - cw * ih) < max(ih, iw)  # the input's aspect, to a pixel


def test_exif_orientations_match_pillows(tmp_path):
    pixels = _pattern(5, 7, 3)
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.png"
        image = Image.fromarray(pixels)
        exif = image.getexif()
        exif[0x0112] = orientation
        image.save(path, exif=exif)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
        assert np.array_equal(read_user_image(str(path)).pixels, expected), orientation
        assert np.array_equal(oriented(pixels, orientation), expected)


# ---- input modes ----


def _lab_of_rgb(rgb):
    """sRGB (0..1) to CIE Lab under D50, for the test's CMYK profile table."""
    linear = [((v + 0.055) / 1.055) ** 2.4 if v > 0.04045 else v / 12.92 for v in rgb]
    matrix = ((0.4360747, 0.3850649, 0.1430804), (0.2225045, 0.7168786, 0.0606169),
              (0.0139322, 0.0971045, 0.7141733))  # fmt: skip
    xyz = [sum(m * v for m, v in zip(row, linear, strict=True)) for row in matrix]
    ratios = [t / w for t, w in zip(xyz, (0.9642, 1.0, 0.8249), strict=True)]
    f = [r ** (1 / 3) if r > 216 / 24389 else (24389 / 27 * r + 16) / 116 for r in ratios]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def _cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK printer profile (littleCMS has no built-in CMYK one): an A2B0 lut16 with a
    2-point grid from naive CMYK -> sRGB, to Lab."""

    def s15(x: float) -> bytes:
        return struct.pack(">i", round(x * 65536))

    clut = b""
    for c, m, y, k in itertools.product((0, 1), repeat=4):
        lab = _lab_of_rgb(((1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)))
        clut += struct.pack(
            ">3H", round(lab[0] * 652.8), round((lab[1] + 128) * 256), round((lab[2] + 128) * 256)
        )
    ramp = struct.pack(">2H", 0, 65535)
    identity = b"".join(s15(float(i == j)) for i in range(3) for j in range(3))
    lut = (
        b"mft2"
        + bytes(4)
        + bytes([4, 3, 2, 0])
        + identity
        + struct.pack(">2H", 2, 2)
        + ramp * 4
        + clut
        + ramp * 3
    )
    description = b"test CMYK"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(description) + 1) + description + b"\0" + bytes(78)
    white = s15(0.9642) + s15(1.0) + s15(0.8249)
    tags = [(b"desc", desc), (b"cprt", b"text" + bytes(4) + b"none\0"), (b"wtpt", b"XYZ " + bytes(4) + white),
            (b"A2B0", lut)]  # fmt: skip
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">2I", offset + len(data), len(body))
        data += body
    header = struct.pack(">I", offset + len(data)) + bytes(4) + struct.pack(">I", 0x02100000)
    header += b"prtrCMYKLab " + bytes(12) + b"acsp" + bytes(28) + white + bytes(48)
    assert len(header) == 128
    return header + table + data


def test_cmyk_goes_through_its_icc_profile(tmp_path):
    cmyk = np.zeros((2, 3, 4), np.uint8)
    cmyk[0, 1] = (255, 0, 0, 0)  # cyan
    cmyk[0, 2] = (0, 0, 0, 255)  # black
    cmyk[1, 0] = (128, 0, 0, 0)  # half cyan: where the profile's tone curve differs from the plain formula
    image = Image.fromarray(cmyk, "CMYK")
    profile = _cmyk_profile()
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    expected = np.asarray(
        ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    )
    for name in ("cmyk.tif", "cmyk.jpg"):
        image.save(tmp_path / name, icc_profile=profile, **({"quality": 100} if name.endswith("jpg") else {}))
        decoded = read_user_image(str(tmp_path / name))
        assert decoded.icc_profile is None and "through the image's ICC profile" in decoded.notes[0]
        if name.endswith(".tif"):  # lossless: exactly littleCMS's conversion
            assert np.array_equal(decoded.pixels, expected)
    assert expected[0, 0].tolist() == [255, 255, 255] and expected[0, 2].tolist() == [0, 0, 0]
    assert expected[0, 1, 0] < 20 and expected[0, 1, 1:].min() > 230  # cyan
    image.save(tmp_path / "plain.tif")  # no profile: Pillow's plain conversion, and a note saying so
    plain = read_user_image(str(tmp_path / "plain.tif"))
    assert np.array_equal(plain.pixels, np.asarray(image.convert("RGB")))
    assert "without a usable ICC profile" in plain.notes[0]
    assert plain.pixels[1, 0, 0] == 127 and expected[1, 0, 0] > 150


def test_modes_alpha_and_16_bit_are_read_in_full(tmp_path):
    rgba = _pattern(6, 9, 4, np.uint16)
    tifffile.imwrite(tmp_path / "rgba16.tif", rgba, photometric="rgb", extrasamples=[2])
    image = read_user_image(str(tmp_path / "rgba16.tif"))
    assert image.bit_depth == 16 and np.array_equal(image.pixels, rgba[..., :3])
    assert np.array_equal(image.alpha, rgba[..., 3])
    Image.fromarray(_pattern(6, 9, 1)[..., 0]).convert("LA").save(tmp_path / "la.png")
    la = read_user_image(str(tmp_path / "la.png"))
    assert la.gray and la.alpha is not None and la.bit_depth == 8
    palette = Image.fromarray(_pattern(6, 9, 3)).convert("P")
    palette.save(tmp_path / "p.png", transparency=0)
    p = read_user_image(str(tmp_path / "p.png"))
    assert p.pixels.shape == (6, 9, 3) and p.alpha is not None and not p.gray
    # The base stage: Lanczos on float channels, so 16-bit values keep their precision.
    resized = resized_unit_rgb(image, (12, 18))
    assert (
        resized.shape == (12, 18, 3)
        and resized.dtype == np.float32
        and 0 <= resized.min() <= resized.max() <= 1
    )
    pixels = base_stage_pixels(str(tmp_path / "rgba16.tif"), (12, 18), "cpu", __import__("torch").float32)
    assert tuple(pixels.shape) == (1, 3, 12, 18) and float(pixels.min()) >= -1 and float(pixels.max()) <= 1


def test_writers_take_gray_and_alpha(tmp_path):
    for mode, dtype in itertools.product(("L", "LA", "RGBA"), (np.uint8, np.uint16)):
        pixels = _pattern(40, 30, len(mode), dtype)
        for ext in ("png", "tif"):
            path = tmp_path / f"{mode}{np.dtype(dtype).itemsize}.{ext}"
            options = OutputOptions(mode=mode, icc_profile=b"" if mode.startswith("L") else None)
            write_image_strips([pixels[:7], pixels[7:]], (40, 30), dtype, str(path), options=options)
            if mode == "LA" and ext == "png" and dtype == np.uint16:  # Pillow reads it as RGBA, high bytes
                high = (pixels >> 8).astype(np.uint8)
                assert np.array_equal(np.asarray(Image.open(path)), high[..., [0, 0, 0, 1]])
                continue
            back = read_user_image(str(path))
            colour = pixels[..., :1] if mode.startswith("L") else pixels[..., :3]
            assert np.array_equal(back.pixels, colour) and back.bit_depth == 8 * np.dtype(dtype).itemsize
            if mode.endswith("A"):
                assert np.array_equal(back.alpha, pixels[..., -1])
            else:
                assert back.alpha is None
            assert (back.icc_profile is None) == mode.startswith("L")
    rgb = _pattern(5, 4, 3)
    assert np.array_equal(next(gray_strips([rgb]))[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    colour, alpha = _pattern(10, 3, 3), _pattern(10, 3, 1)
    joined = np.concatenate(list(with_alpha([colour[:4], colour[4:]], [alpha[:3], alpha[3:9], alpha[9:]])))
    assert np.array_equal(joined, np.concatenate([colour, alpha], axis=2))
    with pytest.raises(ValueError, match="rows more"):
        list(with_alpha([colour[:4]], [alpha]))


# ---- renders on the tiny model ----


def test_rgba_input_to_an_exact_print_size_keeps_alpha_and_profile(tmp_path):
    pixels = np.concatenate([_pattern(70, 96, 3), _disc_alpha(70, 96)[..., None]], axis=2)
    source, out = tmp_path / "in.png", tmp_path / "print.png"
    Image.fromarray(pixels, "RGBA").save(source, icc_profile=_tagged_rgb_profile())
    assert (
        cli.main(
            ["upscale", str(source), "a ball", "--print", "2x1.5in", "--dpi", "100", *FAST, "-o", str(out)]
        )
        == 0
    )
    with Image.open(out) as image:
        assert image.mode == "RGBA" and image.size == (200, 150)
        assert image.info["icc_profile"] == _tagged_rgb_profile()
        assert [round(v) for v in image.info["dpi"]] == [100, 100]
        alpha = np.asarray(image)[..., 3]
        recipe = json.loads(image.info["freescale-recipe"])
    # The alpha: the input's disc Lanczos-resized (streamed, a = 3) to the input's aspect covering 200x150,
    # 206x150, its centre cut; within ringing of Pillow's Lanczos (which clips between its two passes).
    disc = _disc_alpha(70, 96)[..., None]
    expected = np.concatenate(list(lanczos_strips([disc], (70, 96), (150, 206))))[:, 3:203, 0]
    assert np.array_equal(alpha, expected)
    pillow = np.asarray(Image.fromarray(disc[..., 0]).resize((206, 150), Image.Resampling.LANCZOS))[:, 3:203]
    assert np.abs(alpha.astype(int) - pillow).mean() < 1
    assert alpha[75, 100] == 255 and alpha[0, 0] == 0 and alpha[-1, -1] == 0
    assert recipe["stages"] == [[128, 128], [192, 256]] and recipe["image_size"] == [150, 200]
    assert recipe["input_image"] == str(source) and recipe["prompt"] == "a ball"


def test_16_bit_exif_rotated_tiff_gives_a_16_bit_output(tmp_path):
    stored = _pattern(70, 96, 3, np.uint16)  # stored 96 wide; orientation 6 turns it upright 70 wide
    source, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(source, stored, photometric="rgb", extratags=[(274, "H", 1, 6, True)])
    assert (
        cli.main(
            ["upscale", str(source), "a wall", "--scale", "2", "--strength", "0.5", *FAST, "-o", str(out)]
        )
        == 0
    )
    with tifffile.TiffFile(out) as tiff:
        page = tiff.pages.first
        result = page.asarray()
        recipe = json.loads(page.description)
    assert result.dtype == np.uint16 and result.shape == (192, 140, 3)  # 2 x the upright 70x96
    assert len(np.unique(result)) > 256  # 16-bit values from the VAE's float output, not 8-bit ones
    assert recipe["bit_depth"] == 16 and recipe["restart"] == 0.5 and recipe["image_size"] == [192, 140]


def _tiny_blip(directory) -> None:
    """A random BLIP captioner with a 10-word vocabulary, saved in transformers' layout (no download)."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip import BlipImageProcessorPil

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "fox", "cat", "sky"]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(directory / "vocab.txt"))
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)  # fmt: skip
    tiny = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = BlipConfig(
        vision_config={**tiny, "image_size": 32, "patch_size": 16},
        text_config={**tiny, "vocab_size": len(words), "max_position_embeddings": 64, "bos_token_id": 2,
                     "sep_token_id": 3, "pad_token_id": 0, "eos_token_id": 3},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).eval().save_pretrained(directory)
    processor.save_pretrained(directory)


def test_gray_16_bit_input_with_a_caption_model(tmp_path):
    from freescale.models.image_captions import caption_image

    blip = tmp_path / "blip"
    blip.mkdir()
    _tiny_blip(blip)
    gray = _pattern(70, 96, 1, np.uint16)[..., 0]
    source, out = tmp_path / "gray16.png", tmp_path / "out.png"
    Image.fromarray(gray).save(source)
    assert Image.open(source).mode.startswith("I;16")
    caption = caption_image(
        str(blip), np.round(read_user_image(str(source)).unit_rgb() * 255).astype(np.uint8)
    )
    assert caption.strip()
    assert (
        cli.main(
            ["upscale", str(source), "--size", "200x150", "--caption-model", str(blip), *FAST, "-o", str(out)]
        )
        == 0
    )
    with Image.open(out) as image:
        assert image.mode.startswith("I;16") and image.size == (200, 150) and "icc_profile" not in image.info
        recipe = json.loads(image.info["freescale-recipe"])
        values = exact_values(image)
    assert values.dtype == np.uint16 and values.shape == (150, 200)
    assert recipe["prompt"] == caption and recipe["caption_model"] == str(blip) and recipe["bit_depth"] == 16


# ---- bad input: exit 2, one line, nothing written, no model loaded ----


def _bad_inputs(tmp_path) -> dict:
    rgb, rgba = tmp_path / "rgb.png", tmp_path / "rgba.png"
    Image.fromarray(_pattern(70, 96, 3)).save(rgb)
    Image.fromarray(np.concatenate([_pattern(70, 96, 3), _disc_alpha(70, 96)[..., None]], axis=2)).save(rgba)
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(_pattern(70, 96, 1, np.uint16)[..., 0].astype(np.float32)).save(tmp_path / "float.tif")
    return {"rgb": str(rgb), "rgba": str(rgba), "text": str(tmp_path / "notes.png"),
            "float": str(tmp_path / "float.tif")}  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{text}", "--scale", "2"], "IMAGE {text} is not a readable image"),
        (["{float}", "--scale", "2"], "has image mode 'F'; supported:"),
        (["{tmp}/missing.png", "--scale", "2"], "no such file"),
        (["{rgb}", "--scale", "0"], "--scale 0.0 must be more than 0"),
        (["{rgb}", "--scale", "2", "--size", "300x200"], "not --scale and --size"),
        (["{rgb}", "--print", "300x300in", "--dpi", "300"], "more than the 65536 px a side"),
        (["{rgb}"], "give the output's size: --scale N"),
        (["{rgb}", "--scale", "1"], "nothing to upscale"),
        (["{rgba}", "--scale", "2", "-o", "{tmp}/out.jpg"], "has alpha, which"),
        (["{rgb}", "--scale", "2", "--bit-depth", "16", "-o", "{tmp}/out.jpg"], "needs a .png or .tif"),
        (["{rgb}", "--scale", "2", "--caption-model", "{tmp}/nowhere"], "{tmp}/nowhere: no such directory"),
        (["{rgb}", "--scale", "2", "--strength", "0"], "--strength 0.0 must be in (0, 1]"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_before_any_model_loads(argv, message, tmp_path, no_loading, capsys):
    paths = {**_bad_inputs(tmp_path), "tmp": str(tmp_path)}
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [a.format(**paths) for a in argv]
    if not any(a.startswith("-o") for a in args):
        args += ["-o", str(tmp_path / "out.png")]
    assert cli.main(["upscale", *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(**paths) in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
