"""Untrusted input images (--image, --mask): opened under a pixel limit, checked cheaply before any model
loads, and read as exact 8- or 16-bit values (Pillow alone reads 16-bit RGB PNGs as their high bytes)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, UnidentifiedImageError

from freescale.errors import ConfigError

# A mask is resized to the latent grid (1/8 of the output), so 8192 a side covers the largest output
# (65536 px) at one pixel per latent; the limit also bounds what an untrusted header can make us decode.
MAX_INPUT_PIXELS = 8192 * 8192
# Up to this many pixels an image is decoded whole when checked; larger ones are verified (the container
# walked, PNG checksums read) and decoded when used, where a broken file is still one line.
DECODE_WHEN_CHECKED_PIXELS = 4096 * 4096
GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
SUPPORTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", *GRAY16_MODES)
# Pillow's rawmodes for 16-bit PNG colour: it keeps the high byte; the ";16L" unpacker of the same bytes
# keeps the other one, the low byte (the filters are undone on the whole 16-bit pixel either way).
_PNG16_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "LA;16L"}


@contextmanager
def open_image(path: str, flag: str, check_mode: bool = True) -> Iterator[Image.Image]:
    """Image.open with the pixel limit checked from the header, Pillow's bomb warning an error, and any
    failure to read it one ConfigError naming the flag and the file; `check_mode` False leaves the mode
    to the caller (`freescale upscale` takes more of them)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _check_header(image, path, flag, check_mode)
                yield image
    except ConfigError:  # a ValueError, but already the one line
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ConfigError(f"{flag} {path} has more than the {MAX_INPUT_PIXELS} pixels allowed") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ConfigError(f"{flag} {path} is not a readable image ({_one_line(exc)})") from None


def check_image(path: str, flag: str) -> tuple[int, int]:
    """(width, height) of an image that opens, is within the limits, has a supported mode and is whole."""
    with open_image(path, flag) as image:
        size = image.size
        if size[0] * size[1] > DECODE_WHEN_CHECKED_PIXELS:
            image.verify()
            return size
        decoded = exact_values(image)
    if image.mode == "I" and (decoded.min() < 0 or decoded.max() > 65535):
        raise ConfigError(f"{flag} {path}: 32-bit integer values outside 0..65535 are not supported")
    return size


def exact_values(image: Image.Image) -> np.ndarray:
    """The decoded values, (H, W) or (H, W, bands): uint16 for 16-bit images (16-bit PNG colour read in
    full), else what Pillow gives. Call it on an image not yet loaded."""
    low_rawmode = _png16_low_rawmode(image)
    if low_rawmode is None:
        return np.asarray(image)
    tile = image.tile[0]
    high = np.asarray(image).astype(np.uint16)
    with Image.open(image.filename) as again:
        again.tile = [tile._replace(args=low_rawmode)]
        low = np.asarray(again)
    return high << 8 | low


def unit_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]: 8-bit values / 255 (as `convert("RGB")` gives them), 16-bit / 65535;
    gray is repeated in the three channels and alpha dropped."""
    if image.mode in GRAY16_MODES or is_png16(image):
        values = exact_values(image)
        if values.ndim == 3:  # LA or RGB(A) at 16 bits
            values = values[..., :1] if image.mode == "LA" else values[..., :3]
        else:
            values = values[..., None]
        if image.mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise ConfigError(f"{image.filename}: 32-bit integer values outside 0..65535 are not supported")
        return np.broadcast_to(values.astype(np.float32) / 65535.0, (*values.shape[:2], 3)).copy()
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _check_header(image: Image.Image, path: str, flag: str, check_mode: bool = True) -> None:
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        raise ConfigError(
            f"{flag} {path} is {width}x{height}, more than the {MAX_INPUT_PIXELS} pixels allowed"
        )
    if not check_mode:
        return
    if image.mode not in SUPPORTED_MODES:
        raise ConfigError(
            f"{flag} {path} has image mode {image.mode!r}; supported: 8-bit gray, RGB, palette (with or "
            "without alpha), 16-bit gray and 16-bit RGB PNG"
        )
    tile = image.tile[0] if len(image.tile) == 1 else None
    rawmode = getattr(tile, "args", None)
    if isinstance(rawmode, str) and ";16" in rawmode and image.mode in ("RGB", "RGBA", "LA"):
        if not is_png16(image):
            raise ConfigError(
                f"{flag} {path}: 16-bit colour is read exactly only from PNG; save it as a 16-bit PNG"
            )


def is_png16(image: Image.Image) -> bool:
    """A 16-bit colour or gray-alpha PNG, which Pillow alone would read as its high bytes (not yet loaded)."""
    return _png16_low_rawmode(image) is not None


def _png16_low_rawmode(image: Image.Image) -> str | None:
    if image.format != "PNG" or len(image.tile) != 1 or not getattr(image, "filename", ""):
        return None
    return _PNG16_LOW_BYTES.get(image.tile[0].args)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
