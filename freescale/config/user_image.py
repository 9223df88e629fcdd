"""The user's own image for `freescale upscale`: any common mode read as exact values (EXIF orientation
applied, CMYK through its ICC profile, 16-bit in full), its alpha, and what the output keeps of it."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageCms

from freescale.config.input_images import (
    GRAY16_MODES,
    MAX_INPUT_PIXELS,
    exact_values,
    is_png16,
    open_image,
)
from freescale.errors import ConfigError

FLAG = "IMAGE"  # how messages name the input (the command's positional argument)
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", *GRAY16_MODES)
ALLOWED = "8- or 16-bit gray, gray+alpha, RGB or RGBA, palette, or CMYK (JPEG, TIFF)"
ORIENTATION_TAG = 0x0112  # EXIF Orientation; 5..8 swap width and height
_TIFF_ALPHA = (1, 2)  # ExtraSamples: associated or unassociated alpha


@dataclass(frozen=True)
class UserImage:
    """The decoded input, oriented. `pixels` (H, W, C) uint8 or uint16: C = 1 (gray) or 3 (RGB, in the
    colour space of `icc_profile`: the input's own, None for untagged or converted-to-sRGB CMYK)."""

    pixels: np.ndarray
    alpha: np.ndarray | None  # (H, W), the dtype of `pixels`
    icc_profile: bytes | None
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[:2]

    @property
    def gray(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def bit_depth(self) -> int:
        return 8 * self.pixels.dtype.itemsize

    def unit_rgb(self) -> np.ndarray:
        """(H, W, 3) float32 in [0, 1]: each value over its full scale, gray repeated in three channels."""
        full = float(np.iinfo(self.pixels.dtype).max)
        return np.broadcast_to(self.pixels.astype(np.float32) / full, (*self.size, 3)).copy()


def oriented(values: np.ndarray, orientation: int) -> np.ndarray:
    """`values` (H, W, ...) turned upright as EXIF orientation 1..8 says (what ImageOps.exif_transpose
    does to an image); other values are left as they are."""
    swapped = np.swapaxes(values, 0, 1)
    turns = {
        2: values[:, ::-1],
        3: values[::-1, ::-1],
        4: values[::-1],
        5: swapped,
        6: swapped[:, ::-1],  # 90 degrees clockwise
        7: swapped[::-1, ::-1],
        8: swapped[::-1],  # 90 degrees counter-clockwise
    }
    return np.ascontiguousarray(turns.get(orientation, values))


def _profile_space(icc: bytes) -> str | None:
    """The colour space of an ICC profile ('RGB', 'GRAY', 'CMYK' ...), None if it does not parse."""
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile.xcolor_space.strip()
    except (OSError, ValueError, TypeError):
        return None


def _cmyk_to_rgb(image: Image.Image) -> tuple[np.ndarray, tuple[str, ...]]:
    """CMYK through its embedded profile to sRGB (perceptual intent), else Pillow's plain conversion."""
    icc = image.info.get("icc_profile")
    if icc and _profile_space(icc) == "CMYK":
        try:
            srgb = ImageCms.createProfile("sRGB")
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
            return np.asarray(converted), ("CMYK converted to sRGB through the image's ICC profile",)
        except ImageCms.PyCMSError as exc:
            raise ConfigError(
                f"{FLAG} {image.filename}: its CMYK ICC profile does not convert ({exc})"
            ) from None
    note = "CMYK without a usable ICC profile: converted to RGB plainly (R = 255 - C - K ...), as sRGB"
    return np.asarray(image.convert("RGB")), (note,)


def _alpha_split(values: np.ndarray, has_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if values.ndim == 2:
        values = values[..., None]
    if not has_alpha:
        return values, None
    return np.ascontiguousarray(values[..., :-1]), np.ascontiguousarray(values[..., -1])


def _pillow_values(image: Image.Image, path: str) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """(colour values (H, W, 1 or 3), alpha or None, notes) of an image Pillow opened, not yet loaded."""
    mode = image.mode
    if mode == "CMYK":
        rgb, notes = _cmyk_to_rgb(image)
        return rgb, None, notes
    if mode in GRAY16_MODES:
        values = exact_values(image)
        if values.min() < 0 or values.max() > 65535:
            raise ConfigError(f"{FLAG} {path}: 32-bit integer values outside 0..65535 are not supported")
        return values.astype(np.uint16)[..., None], None, ()
    if is_png16(image) and image.tile[0].args == "LA;16B":  # Pillow has no unpacker for its low bytes
        raise ConfigError(
            f"{FLAG} {path}: 16-bit gray+alpha PNG is not read exactly; save it as a 16-bit RGBA PNG or "
            "a 16-bit TIFF"
        )
    if is_png16(image):  # 16-bit RGB or RGBA PNG, read in full
        return (*_alpha_split(exact_values(image), mode in ("RGBA", "LA")), ())
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        return (*_alpha_split(np.asarray(image.convert("RGBA" if has_alpha else "RGB")), has_alpha), ())
    if mode == "1":
        return np.asarray(image.convert("L"))[..., None], None, ()
    if "transparency" in image.info and mode in ("L", "RGB"):  # a tRNS colour key: alpha 0 where it matches
        has = "LA" if mode == "L" else "RGBA"
        return (*_alpha_split(np.asarray(image.convert(has)), True), ())
    return (*_alpha_split(np.asarray(image), mode in ("LA", "RGBA")), ())


def _is_tiff16(path: str) -> bool:
    with open(path, "rb") as handle:
        if handle.read(4) not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return False
    import tifffile

    with tifffile.TiffFile(path) as tiff:
        return tiff.pages.first.bitspersample == 16


def _read_tiff16(path: str) -> UserImage:
    """A 16-bit TIFF (gray, RGB, with or without alpha) with tifffile, which reads every sample."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            height, width = page.imagelength, page.imagewidth
            if height * width > MAX_INPUT_PIXELS:
                raise ConfigError(
                    f"{FLAG} {path} is {width}x{height}, more than the {MAX_INPUT_PIXELS} pixels allowed"
                )
            colour = {tifffile.PHOTOMETRIC.MINISBLACK: 1, tifffile.PHOTOMETRIC.RGB: 3}.get(page.photometric)
            extra = tuple(page.extrasamples or ())
            if colour is None or page.planarconfig != tifffile.PLANARCONFIG.CONTIG or len(extra) > 1:
                raise ConfigError(f"{FLAG} {path}: this 16-bit TIFF's layout is not supported; use {ALLOWED}")
            values = page.asarray()
            icc = page.tags.valueof(34675)  # InterColorProfile
            orientation = page.tags.valueof(274, 1)
    except ConfigError:
        raise
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ConfigError(f"{FLAG} {path} is not a readable image ({exc})") from None
    has_alpha = bool(extra) and extra[0] in _TIFF_ALPHA
    pixels, alpha = _alpha_split(values.astype(np.uint16), has_alpha)
    if pixels.shape[2] != colour:  # an extra sample that is not alpha
        pixels = pixels[..., :colour]
    return _finished(pixels, alpha, bytes(icc) if icc else None, orientation, (), path)


def _finished(pixels, alpha, icc, orientation, notes, path) -> UserImage:
    if icc is not None:
        wanted = "GRAY" if pixels.shape[2] == 1 else "RGB"
        space = _profile_space(icc)
        if space != wanted:
            notes = (
                *notes,
                f"{FLAG}'s ICC profile ({space or 'unreadable'}) does not fit its pixels: dropped",
            )
            icc = None
    pixels = oriented(pixels, orientation)
    alpha = None if alpha is None else oriented(alpha, orientation)
    return UserImage(pixels, alpha, icc, notes)


def read_user_image(path: str) -> UserImage:
    """Decode the user's image, upright; a file that is no image, too large or of a mode not taken is one
    ConfigError naming it."""
    if not os.path.isfile(path):
        raise ConfigError(f"{FLAG} {path}: no such file")
    if _is_tiff16(path):
        return _read_tiff16(path)
    with open_image(path, FLAG, check_mode=False) as image:
        if image.mode not in MODES:
            raise ConfigError(f"{FLAG} {path} has image mode {image.mode!r}; supported: {ALLOWED}")
        icc = image.info.get("icc_profile") if image.mode != "CMYK" else None
        try:
            pixels, alpha, notes = _pillow_values(image, path)
            # After decoding: reading a PNG's EXIF loads the image (and a 16-bit PNG must be read unloaded).
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(
                f"{FLAG} {path} is not a readable image ({' '.join(str(exc).split())})"
            ) from None
    return _finished(pixels, alpha, icc or None, orientation, notes, path)


@dataclass(frozen=True)
class UserImageFacts:
    """What the config needs of the input: its upright size (H, W) and what the output keeps."""

    size: tuple[int, int]
    gray: bool
    alpha: bool
    bit_depth: int
    notes: tuple[str, ...]


@lru_cache(maxsize=8)
def _facts(path: str, mtime_ns: int, length: int) -> UserImageFacts:
    image = read_user_image(path)
    return UserImageFacts(image.size, image.gray, image.alpha is not None, image.bit_depth, image.notes)


def user_image_facts(path: str) -> UserImageFacts:
    """`read_user_image`'s facts, decoded once per file version (a config is validated more than once)."""
    if not os.path.isfile(path):
        raise ConfigError(f"{FLAG} {path}: no such file")
    stat = os.stat(path)
    return _facts(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


def resized_unit_rgb(image: UserImage, size: tuple[int, int]) -> np.ndarray:
    """The image's (H, W, 3) [0, 1] floats resized to `size` (h, w) with Lanczos (Pillow's, on 32-bit float
    channels: no 8-bit rounding of a 16-bit input), clipped to [0, 1] against the kernel's overshoot."""
    rgb = image.unit_rgb()
    if tuple(size) == image.size:
        return rgb
    channels = [
        np.asarray(Image.fromarray(rgb[..., c]).resize((size[1], size[0]), Image.Resampling.LANCZOS))
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def base_stage_pixels(path: str, size: tuple[int, int], device, dtype):
    """The input resized to the base stage `size` (h, w) (`resized_unit_rgb`) as the VAE takes an image:
    (1, 3, h, w) in [-1, 1]."""
    import torch

    rgb = resized_unit_rgb(read_user_image(path), size)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    return (tensor * 2 - 1).to(device=device, dtype=dtype)
