"""SIGINT and SIGTERM stop `freescale render` cleanly, in this process and on Ray workers: one line, exit
130/143 within seconds, no temporary file, whole checkpoints, no process of the render left; a lost worker
retried until the retries run out ends with one line per retry and a last line saying how to resume."""

import os
import re
import signal
import subprocess
import sys
import time

from freescale.outputs.checkpoints import CheckpointDir

# The CLI, optionally with test-only faults patched in from the environment (never in the product):
# STALL_DIR: fetching a strip stalls once that directory holds a temporary output (an output mid-write);
# DIE_AT: rank 1 exits at that UNet call of every attempt (a worker lost on every retry).
RUN_CLI = """
import os, signal, sys, time
# As from a terminal: a test run launched in the background (a CI job) hands its children an ignored
# SIGINT, which the CLI rightly keeps ignored (nohup semantics).
signal.signal(signal.SIGINT, signal.default_int_handler)
import freescale.rendering.renderer as driver
from freescale.cli.commands import main
from freescale.rendering.rank_render import render_on_rank, take_strip

STALL_DIR, DIE_AT = os.environ.get("STALL_DIR"), int(os.environ.get("DIE_AT", "0"))

def take_strip_stalling(state, key):
    if any(name.startswith(".freescale-") for name in os.listdir(STALL_DIR)):
        open(STALL_DIR + ".writing", "w").close()
        time.sleep(600)
    return take_strip(state, key)

def render_dying(state, config, *args, **kwargs):
    calls = []

    def count(module, args, kwargs):
        calls.append(1)
        if state.rank == 1 and len(calls) == DIE_AT:
            os._exit(1)

    state.model.pipe.unet.register_forward_pre_hook(count, with_kwargs=True)
    return render_on_rank(state, config, *args, **kwargs)

if STALL_DIR:
    driver.take_strip = take_strip_stalling
if DIE_AT:
    driver.render_on_rank = render_dying
sys.exit(main(sys.argv[1:]))
"""
ARGS = ["a lighthouse", "--model", "tiny", "--seed", "4", "--quiet"]
WAIT_S = 300  # for the render to get where the signal is sent; a busy 2-core machine is slow


def start(tmp_path, argv: list[str], command: str = "render", **env: str) -> tuple[subprocess.Popen, object]:
    """The CLI in its own session (so that every process it starts, Ray's included, can be found)."""
    err = open(tmp_path / "stderr.txt", "w+")
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **env}
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, command, *argv],
        stdout=subprocess.DEVNULL, stderr=err, env=environment, start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    return process, err


def wait_for(process: subprocess.Popen, path, text: str | None = None) -> None:
    """Until `path` exists (and holds `text`, when given)."""
    deadline = time.monotonic() + WAIT_S
    while not os.path.exists(path) or (text is not None and text not in open(path).read()):
        assert process.poll() is None, f"the render ended (exit {process.returncode}) before {path} was ready"
        assert time.monotonic() < deadline, f"{path} was not ready within {WAIT_S} s"
        time.sleep(0.05)


def stop(process: subprocess.Popen, signum: int) -> float:
    """Send the signal; the seconds until the render has exited."""
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return time.monotonic() - sent


def stderr_of(err) -> str:
    err.seek(0)
    return err.read()


def survivors(session: int) -> list[str]:
    """The live processes of a session (the render's, Ray's raylet, GCS, dashboard, agents, workers)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")[:100]
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(f"{pid} {command}")
    return found


def lingering(session: int, grace_s: float = 5.0) -> list[str]:
    """The processes of a session still alive `grace_s` after its leader exited (none, once Ray's shutdown
    has run: ray.shutdown returns before the last of its killed processes has gone)."""
    deadline = time.monotonic() + grace_s
    while (left := survivors(session)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def temporaries(*directories) -> list[str]:
    return [n for d in directories if os.path.isdir(d) for n in os.listdir(d) if n.startswith(".freescale-")]


def test_sigterm_mid_render_keeps_whole_checkpoints_and_says_where_to_resume(tmp_path):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    out.mkdir()
    argv = [*ARGS, "--scale", "2", "--steps", "8", "-o", str(out / "a.png"), "--checkpoint-dir", str(ckpt)]
    process, err = start(tmp_path, [*argv, "--checkpoint-every", "1"])
    wait_for(process, ckpt / "stage0.pt")
    elapsed = stop(process, signal.SIGTERM)
    text = stderr_of(err)
    assert process.returncode == 143, text
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    snapshot = CheckpointDir(str(ckpt)).load(2)  # every file whole: torch.load reads each one
    assert len(snapshot.finished) >= 1
    line = re.fullmatch(
        r"freescale: interrupted \(SIGTERM\) at stage (\d)/2 step (\d)/8; "
        r"`freescale render --resume (\S+)` continues from (.+)\n",
        text,
    )
    assert line, text
    assert line.group(3) == str(ckpt) and line.group(4) == snapshot.describe()
    assert int(line.group(1)) >= 2 or line.group(2) == "8"  # stage 1 had finished when the signal was sent
    assert temporaries(out, ckpt) == [] and os.listdir(out) == []


def test_sigint_while_an_output_is_written_removes_its_temporary_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    process, err = start(tmp_path, [*ARGS, "--scale", "2", "--steps", "2", "-o", str(out / "a.png")],
                         STALL_DIR=str(out))  # fmt: skip
    wait_for(process, str(out) + ".writing")
    assert temporaries(out), "the output was not being written"
    elapsed = stop(process, signal.SIGINT)
    text = stderr_of(err)
    assert process.returncode == 130, text
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert text == (
        "freescale: interrupted (SIGINT) at stage 2/2 step 2/2; "
        "no checkpoints were kept (--checkpoint-dir makes a render resumable)\n"
    )
    assert os.listdir(out) == []


def test_sigterm_on_ray_workers_mid_write_leaves_no_process_and_no_temporary_file(tmp_path):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    out.mkdir()
    argv = [*ARGS, "--scale", "2", "--steps", "2", "-o", str(out / "a.png"), "--workers", "2"]
    process, err = start(tmp_path, [*argv, "--checkpoint-dir", str(ckpt)], STALL_DIR=str(out))
    wait_for(process, str(out) + ".writing")
    assert temporaries(out), "the output was not being written"
    assert len(survivors(process.pid)) > 3, "the render's Ray processes were not found"
    elapsed = stop(process, signal.SIGTERM)
    immediately = survivors(process.pid)
    left = lingering(process.pid)
    text = stderr_of(err)
    assert process.returncode == 143, text
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert left == [], f"processes of the render outlived it: {left}"
    print("right after the exit:", immediately)
    # Ray's workers report no step to the driver: the line says only what the checkpoints know.
    assert text == (
        f"freescale: interrupted (SIGTERM); `freescale render --resume {ckpt}` writes the outputs "
        "(every stage is rendered)\n"
    )
    assert len(CheckpointDir(str(ckpt)).load(2).finished) == 2
    assert temporaries(out, ckpt) == [] and os.listdir(out) == []


def test_a_worker_lost_on_every_retry_ends_with_one_line_each_and_how_to_resume(tmp_path):
    ckpt = tmp_path / "ckpt"
    argv = [*ARGS[:-1], "--scale", "2", "--steps", "4", "-o", str(tmp_path / "a.png"), "--workers", "2"]
    argv += ["--checkpoint-dir", str(ckpt), "--checkpoint-every", "1", "--max-retries", "1"]
    process, err = start(tmp_path, argv, DIE_AT="2")
    process.wait(timeout=WAIT_S)
    text = stderr_of(err)
    assert process.returncode == 1, text
    lines = text.splitlines()
    # One line per lost worker, and none of what the surviving rank's broken collectives raise later.
    lost = [line for line in lines if "worker rank" in line]
    assert len(lost) == 2 and lost[0].endswith("; starting fresh workers (retry 1/1)"), text
    assert lost[1] == lines[-1]
    assert "Unhandled error" not in text and "Traceback" not in text, text
    assert re.fullmatch(
        r"freescale: error: worker rank 1 \(pid \d+ on node \S+\) died during the render: .*; gave up after "
        rf"1 retry \(--max-retries 1\); `freescale render --resume {re.escape(str(ckpt))}` continues from "
        r"stage 2 step \d",
        lines[-1],
    ), lines[-1]
    immediately = survivors(process.pid)
    left = lingering(process.pid)
    print("right after the exit:", immediately)
    assert left == [], f"processes of the render outlived it: {left}"


def test_sigterm_stops_a_batch_and_says_that_a_rerun_continues(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\na cat\n")
    process, err = start(tmp_path, [str(prompts)], command="batch")
    wait_for(process, tmp_path / "stderr.txt", "step 1/")
    elapsed = stop(process, signal.SIGTERM)
    text = stderr_of(err)
    assert process.returncode == 143, text
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert "Traceback" not in text, text
    assert text.splitlines()[-1] == (
        "freescale: interrupted (SIGTERM); rerun the same `freescale batch` to continue "
        "(finished outputs are skipped)"
    )
    assert sorted(os.listdir(tmp_path)) == ["prompts.txt", "stderr.txt"]


def test_sigterm_to_the_whole_process_group_stops_ray_too(tmp_path):
    # A scheduler stopping a job (Slurm, systemd) signals every process of it: Ray's raylet, GCS and
    # workers get the SIGTERM as well, and a graceful Ray shutdown would wait a minute for them.
    argv = [*ARGS, "--scale", "4", "--steps", "30", "-o", str(tmp_path / "a.png"), "--workers", "2"]
    process, err = start(tmp_path, [a for a in argv if a != "--quiet"])
    wait_for(process, tmp_path / "stderr.txt", "step 1/30")
    assert len(survivors(process.pid)) > 3, "the render's Ray processes were not found"
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    elapsed = time.monotonic() - sent
    left = lingering(process.pid)
    text = stderr_of(err)
    assert process.returncode == 143, text
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert left == [], f"processes of the render outlived it: {left}"
    assert text.splitlines()[-1].startswith("freescale: interrupted (SIGTERM); no checkpoints were kept")
    assert temporaries(tmp_path) == []
