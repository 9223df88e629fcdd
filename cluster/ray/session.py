"""Ray for one command: joined (or started, embedded) once, on first need, and shut down at the end only
if it was started here. The device probe, the worker count and every pool of the command share it."""

from __future__ import annotations

import logging
import os
import signal
import threading


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

            ray.shutdown()
            self.started = False
