"""The progress display: plain lines for job logs, a bar on a terminal, silence with quiet."""

import io

from freescale.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_name_stage_step_and_eta():
    stream = io.StringIO()
    progress = Progress(stream=stream, line_every=0.0)
    for step in range(3, 10):
        progress.step(1, 3, step, 10, first_step=3)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("stage 2/3 step 4/10 ETA ")
    assert lines[-1].startswith("stage 2/3 step 10/10 ETA 0:00")
    assert "\r" not in stream.getvalue()


def test_terminal_bar_ends_with_a_newline_and_notes_do_not_double_it():
    stream = Terminal()
    progress = Progress(stream=stream)
    progress.note("loading")
    for step in range(4):
        progress.step(0, 1, step, 4)
    progress.note("writing out.png")
    text = stream.getvalue()
    assert text.startswith("loading\n\rstage 1/1 step 1/4 [")
    assert "[########################] ETA 0:00" in text
    assert text.endswith("   \nwriting out.png\n")


def test_quiet_prints_nothing():
    stream = io.StringIO()
    progress = Progress(stream=stream, quiet=True)
    progress.note("x")
    progress.step(0, 1, 0, 1)
    assert stream.getvalue() == ""
