"""Ray for one command: joined (or started, embedded) once, on first need, and shut down at the end only
if it was started here. The device probe, the worker count and every pool of the command share it."""

from __future__ import annotations

import logging
import os
import signal
import threading

# Whether this command's ray.init started an embedded Ray (its GCS, raylet, dashboard and agents are then
# our children), which an interrupted command kills rather than waits for.
_started_embedded = False


def _record_started_processes() -> None:
    import psutil

    global _started_embedded
    _started_embedded = bool(psutil.Process().children(recursive=True))


def started_ray_here() -> bool:
    """Whether this command started the Ray it uses (an embedded, local one: its processes our children)."""
    return _started_embedded


def kill_started_processes() -> None:
    """Kill every process this command started that is still running (the embedded Ray's)."""
    import psutil

    for process in psutil.Process().children(recursive=True):
        try:
            process.kill()
        except psutil.Error:
            pass
    global _started_embedded
    _started_embedded = False


class RaySession:
    """`with RaySession(address) as session:` ... `session.ensure()` before anything asks Ray."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.started = False

    def ensure(self) -> None:
        import ray

        if ray.is_initialized():
            return
        # An embedded Ray we start must not phone home; a joined cluster keeps its own setting.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Ray's driver replaces the SIGTERM handler (with sys.exit, then a C++ crash handler that aborts):
        # a handler the command installed (to clean up and exit 143) is put back.
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        # Ray's own INFO/WARNING lines would drown the progress display; errors still show.
        ray.init(address=self.address, ignore_reinit_error=True, logging_level=logging.ERROR)
        _record_started_processes()
        if threading.current_thread() is threading.main_thread():
            for signum, handler in handlers.items():
                if callable(handler):
                    signal.signal(signum, handler)
        self.started = True

    def gpus(self) -> int:
        import ray

        self.ensure()
        return int(ray.cluster_resources().get("GPU", 0))

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.started:
            import ray

            interrupted = isinstance(exc_info[1], KeyboardInterrupt)
            if interrupted and started_ray_here():
                # A signal to the whole process group (a scheduler stopping a job) also reaches Ray's own
                # processes, and every Ray call, ray.shutdown included, would then wait a minute for them.
                kill_started_processes()
            ray.shutdown()  # quick once they are gone: it is half-stopped ones that it waits for
            self.started = False
