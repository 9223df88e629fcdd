"""The one way this project writes a file: into a temporary file beside it, then moved into place, so a
reader never sees a partial file and an interrupted write leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from freescale.errors import ConfigError


def atomic_write(path: str, write: Callable[[str], None], overwrite: bool = True) -> None:
    """Run write(temporary) and move the result to `path`. With overwrite=False an existing `path` is
    never replaced, even one that appeared while writing (a hard link fails on an existing name)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".freescale-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        write(temporary)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise ConfigError(f"output {path!r} already exists; pass --overwrite to replace it") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
