"""Peak memory of long `freescale video` renders (text-to-video, rendered chunk by chunk): whether it grows
with the clip's length. One JSON object on stdout (and in --out).

Each clip length N of --frames is rendered by `freescale video ... --frames N` in a fresh process (peaks
must not mix), run through this file's --child wrapper, which reports the process's own peak RSS
(getrusage(RUSAGE_SELF).ru_maxrss: exact, spikes included) and its RSS sampled over the run (the peak in
each quarter of it: a leak shows as a rising staircase). Per N: chunks, frames rendered (overlaps twice),
peak RSS, seconds of the whole command (imports and model build included) and frames per second; then the
growth peak(largest N) / peak(smallest N). The default bench takes some 15 minutes on 2 busy CPU cores.
torch runs on --threads 1 in the child: on a shared 2-core machine 2 threads can be 10x slower.

With --workers W > 1 (Ray) the render's ranks are separate processes: this process polls the child's
process tree with psutil (a Ray dependency) and reports the peak RSS of the driver, of each render worker
and of Ray's own processes (polled peaks can miss short spikes; the driver's is its exact ru_maxrss).
    python bench/video_memory.py                                     # 64, 256, 1024 frames, one process
    python bench/video_memory.py --frames 64,256 --workers 2
    python bench/video_memory.py --out bench/results/cpu_video_memory_tiny.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EXTENSIONS = {"ffv1": ".mkv", "h264": ".mp4", "h265": ".mp4", "prores": ".mov", "prores4444": ".mov"}
MIB = 2**20


def mib(n_bytes: float) -> float:
    return round(n_bytes / MIB, 1)


def own_rss_bytes() -> int:
    """This process's resident set now (Linux /proc; no dependency)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Samples this process's RSS every `interval` seconds on a daemon thread, for the peak per part of
    the run (ru_maxrss gives only the one peak)."""

    def __init__(self, interval: float) -> None:
        self.interval, self.samples = interval, []  # (seconds since start, bytes)
        self._stop = threading.Event()
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._start, own_rss_bytes()))
            self._stop.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join()
        return self.samples


def quarter_peaks(samples: list[tuple[float, int]]) -> list[float]:
    """The peak RSS (MiB) in each quarter of the sampled time."""
    if not samples:
        return []
    end = samples[-1][0] or 1.0
    peaks = [0] * 4
    for t, rss in samples:
        part = min(int(4 * t / end), 3)
        peaks[part] = max(peaks[part], rss)
    return [mib(p) for p in peaks]


def run_child(report: str, threads: int, interval: float, argv: list[str]) -> int:
    """Run `freescale` with `argv` in this process; write its peak RSS and sampled RSS to `report`."""
    import torch

    torch.set_num_threads(threads)
    from freescale.cli.commands import main

    sampler = RssSampler(interval)
    code = main(argv)
    samples = sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    with open(report, "w", encoding="utf-8") as handle:
        json.dump({"exit_code": code, "peak_rss_bytes": peak, "quarter_peaks_mib": quarter_peaks(samples),
                   "torch": torch.__version__}, handle)  # fmt: skip
    return code


def freescale_args(args: argparse.Namespace, frames: int, output: str) -> list[str]:
    """`freescale video` arguments of the render of `frames` frames."""
    flags = {"--model": args.model, "--scale": args.scale, "--steps": args.steps,
             "--dilate-tau": args.dilate_tau, "--guidance": args.guidance, "--seed": args.seed,
             "--frames": frames, "--chunk-frames": args.chunk_frames, "--chunk-overlap": args.chunk_overlap,
             "--window": args.window, "--window-stride": args.window_stride, "--codec": args.codec,
             "--workers": args.workers, "--device": "cpu", "-o": output}  # fmt: skip
    argv = ["video", args.prompt]
    for flag, value in flags.items():
        argv += [flag, str(value)]
    return argv + ["--overwrite", "--quiet"]


class TreePoller:
    """Polls the RSS of a process and all its descendants with psutil; the peak per process."""

    def __init__(self, pid: int, interval: float) -> None:
        import psutil

        self.root, self.interval = psutil.Process(pid), interval
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (command line, peak bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return  # the child has exited
            for process in processes:
                try:
                    rss, command = process.memory_info().rss, " ".join(process.cmdline())[:80]
                except psutil.Error:
                    continue
                name, peak = self.peaks.get(process.pid, (command, 0))
                # A Ray worker's title names its current task (ray::IDLE before it holds an actor).
                name = command if "RenderWorker" in command else name
                self.peaks[process.pid] = (name, max(peak, rss))
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        """The polled peaks (MiB): the driver's, each render worker's, and the sum of Ray's own processes'."""
        self._stop.set()
        self._thread.join()
        driver = self.peaks.pop(self.root.pid, ("", 0))[1]
        workers = sorted((name, peak) for name, peak in self.peaks.values() if "RenderWorker" in name)
        ray_own = sum(peak for name, peak in self.peaks.values() if "RenderWorker" not in name)
        return {"driver_polled_peak_rss_mib": mib(driver),
                "worker_peak_rss_mib": [mib(peak) for _, peak in workers],
                "ray_processes_peak_rss_mib": mib(ray_own)}  # fmt: skip


def measure(args: argparse.Namespace, frames: int, directory: str) -> dict:
    """One render of `frames` frames in a fresh process: its chunks, peak RSS, wall time, frame rate."""
    from freescale.tiling.frame_chunks import frame_chunks

    chunks = frame_chunks(frames, args.chunk_frames, args.chunk_overlap)
    output = os.path.join(directory, f"clip{frames}{EXTENSIONS[args.codec]}")
    report = os.path.join(directory, f"report{frames}.json")
    command = [sys.executable, os.path.abspath(__file__), "--child", report, "--threads",
               str(args.threads), "--sample-every", str(args.sample_every), "--",
               *freescale_args(args, frames, output)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poller = TreePoller(child.pid, args.sample_every) if args.workers > 1 else None
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - start
    polled = poller.stop() if poller else {}
    line = {"frames": frames, "chunks": len(chunks), "frames_rendered": sum(b - a for a, b in chunks)}
    if child.returncode or not os.path.exists(report):
        return {**line, "error": f"exit {child.returncode}: {(stderr or stdout).strip()[-2000:]}"}
    with open(report, encoding="utf-8") as handle:
        child_report = json.load(handle)
    peak = child_report["peak_rss_bytes"]
    line.update({
        "peak_rss_mib": mib(peak), "seconds": round(seconds, 1),
        "frames_per_second": round(frames / seconds, 3),
        "quarter_peak_rss_mib": child_report["quarter_peaks_mib"],
        "output_mib": mib(os.path.getsize(output)),
        **polled,
    })  # fmt: skip
    os.remove(output)
    return line


def run(args: argparse.Namespace) -> dict:
    lengths = [int(n) for n in args.frames.split(",")]
    with tempfile.TemporaryDirectory() as directory:
        lines = []
        for frames in lengths:
            lines.append(measure(args, frames, directory))
            print(json.dumps(lines[-1]), file=sys.stderr, flush=True)  # progress: one line per clip length
    measured = [line for line in lines if "peak_rss_mib" in line]
    growth = None
    if len(measured) > 1:
        first, last = measured[0], measured[-1]
        growth = {"frames": [first["frames"], last["frames"]],
                  "peak_ratio": round(last["peak_rss_mib"] / first["peak_rss_mib"], 3),
                  "peak_difference_mib": round(last["peak_rss_mib"] - first["peak_rss_mib"], 1)}  # fmt: skip
    names = ("model", "scale", "steps", "dilate_tau", "guidance", "chunk_frames", "chunk_overlap", "window",
             "window_stride", "codec", "workers", "threads")  # fmt: skip
    command = "freescale " + shlex.join(freescale_args(args, 0, "OUT")).replace("--frames 0", "--frames N")
    return {"bench": "video_memory", "prompt": args.prompt, **{k: getattr(args, k) for k in names},
            "cpus": os.cpu_count(), "command": command, "clips": lines, "growth": growth}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", default="64,256,1024", help="clip lengths, comma-separated")
    parser.add_argument("--prompt", default="a red fox running through snow")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--scale", type=int, default=2, help="output size / native size (default: 2)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--dilate-tau", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-frames", type=int, default=16)
    parser.add_argument("--chunk-overlap", type=int, default=4)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--window-stride", type=int, default=4)
    parser.add_argument("--codec", choices=sorted(EXTENSIONS), default="ffv1", help="(default: ffv1, .mkv)")
    parser.add_argument("--workers", type=int, default=1, help="Ray ranks; > 1 needs psutil (default: 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the render (default: 1)")
    parser.add_argument("--sample-every", type=float, default=0.2, help="seconds between RSS samples")
    parser.add_argument("--out", help="also write the JSON object to this file")
    parser.add_argument("--child", metavar="REPORT", help=argparse.SUPPRESS)  # run freescale in this process
    args, rest = parser.parse_known_args()
    if args.child:
        sys.exit(run_child(args.child, args.threads, args.sample_every, [a for a in rest if a != "--"]))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.workers > 1:
        try:
            import psutil  # noqa: F401
        except ImportError:
            parser.error("--workers > 1 polls the workers' memory with psutil: install it (Ray installs it)")
    result = run(args)
    text = json.dumps(result)
    print(text, flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
