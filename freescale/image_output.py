"""Writing images atomically: a temporary file in the target directory, renamed into place when whole."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from PIL import Image, PngImagePlugin

from freescale.errors import ConfigError


def _write(image: Image.Image, path: str, recipe: dict | None) -> None:
    ext = os.path.splitext(path)[1].lower()
    text = json.dumps(recipe, sort_keys=True) if recipe is not None else None
    if ext == ".png":
        info = PngImagePlugin.PngInfo()
        if text:
            info.add_text("freescale-recipe", text)
        image.save(path, format="PNG", pnginfo=info)
    elif ext in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=95, comment=text.encode() if text else b"")
    elif ext in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, np.asarray(image), compression="deflate", description=text)
    else:
        raise ConfigError(f"unknown image extension {ext!r}")


def save_image(image: Image.Image, path: str, overwrite: bool = False, recipe: dict | None = None) -> None:
    """Write `image` to `path`; a crash never leaves a partial file, and nothing is replaced unasked."""
    directory = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1]
    fd, temporary = tempfile.mkstemp(prefix=".freescale-", suffix=ext, dir=directory)
    os.close(fd)
    try:
        _write(image, temporary, recipe)
        if overwrite:
            os.replace(temporary, path)
        else:
            # link() fails if the name exists, so a file that appeared meanwhile is never clobbered.
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise ConfigError(f"output {path!r} already exists; pass --overwrite to replace it") from None
            os.unlink(temporary)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def stage_path(path: str, stage: int, size: tuple[int, int]) -> str:
    """Where `--save-stages` writes stage k: out.png -> out.stage0-1024x1024.png."""
    stem, ext = os.path.splitext(path)
    return f"{stem}.stage{stage}-{size[1]}x{size[0]}{ext}"
