"""Outputs, their recipe sidecars and checkpoints get the mode the umask gives a new file (issue 15.2):
mkstemp alone would leave them 0600, unreadable by a web server or a colleague."""

import os
import stat

import pytest

from freescale import cli
from freescale.atomic_files import atomic_write, current_umask


@pytest.fixture
def umask():
    """Set a umask for one test and put the previous one back."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_current_umask_reads_without_changing_it(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    path = tmp_path / "a.txt"
    atomic_write(str(path), lambda temporary: open(temporary, "w").write("x"))
    assert mode(path) == expected
    atomic_write(str(tmp_path / "b.txt"), lambda temporary: open(temporary, "w").write("x"), overwrite=False)
    assert mode(tmp_path / "b.txt") == expected


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_render_outputs_sidecars_and_checkpoints_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    out, ckpt = tmp_path / "out.png", tmp_path / "ckpt"
    argv = ["render", "a lighthouse", "--steps", "2", "--scale", "2", "--seed", "1", "--quiet"]
    assert cli.main([*argv, "-o", str(out), "--checkpoint-dir", str(ckpt)]) == 0
    written = [out, tmp_path / "out.png.json", *sorted(ckpt.iterdir())]
    assert len(written) >= 4  # the image, its sidecar, render.json and at least one stage
    assert {path.name: mode(path) for path in written} == {path.name: expected for path in written}
