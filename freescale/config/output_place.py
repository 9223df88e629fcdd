"""Where an output goes, checked before any model loads: a path that is not a directory, in a folder this
process can create files in (permissions, a read-only mount), as the atomic writer will need."""

from __future__ import annotations

import os
import tempfile

from freescale.errors import ConfigError


def check_output_place(path: str) -> None:
    """`path` is not a directory and its folder takes a new file (a probe, created and removed at once:
    access() would say yes to root on a read-only mount)."""
    if os.path.isdir(path):
        raise ConfigError(
            f"output {path!r} is a directory; give a file path, e.g. {os.path.join(path, 'out.png')}"
        )
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, probe = tempfile.mkstemp(prefix=".freescale-probe-", dir=directory)
    except OSError as exc:
        raise ConfigError(f"output {path!r}: cannot write in {directory} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
