"""The one way this project writes a file: into a temporary file beside it, then moved into place, so a
reader never sees a partial file and an interrupted write leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from freescale.errors import ConfigError


def current_umask() -> int:
    """The process umask, read per call. Linux reports it in /proc/self/status, which changes nothing;
    elsewhere os.umask(0) and back (a moment in which another thread's new file would get umask 0)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[str], None], overwrite: bool = True) -> None:
    """Run write(temporary) and move the result to `path`. With overwrite=False an existing `path` is
    never replaced, even one that appeared while writing (a hard link fails on an existing name).

    The file gets the mode a plain new file would (0666 less the umask): mkstemp makes it 0600."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".freescale-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        write(temporary)
        # After the write: a writer may have replaced the temporary file rather than written into it.
        os.chmod(temporary, 0o666 & ~current_umask())
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
