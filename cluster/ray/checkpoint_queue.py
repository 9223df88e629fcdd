"""Checkpoints from a Ray worker to the driver: rank 0 puts them in a queue, a driver thread writes them
as they arrive (so a driver stopped mid-render keeps every checkpoint that reached it)."""

from __future__ import annotations

import threading

from ray.util.queue import Empty, Queue

from freescale.method.snapshots import CheckpointSink

_POLL_S = 0.2


class CheckpointQueue:
    """`with CheckpointQueue(sink) as queue:` pass `queue.worker_sink` to the workers."""

    def __init__(self, sink: CheckpointSink):
        self.sink = sink
        # No CPU reserved: the workers' placement group may hold every CPU of the cluster.
        self.queue = Queue(actor_options={"num_cpus": 0})
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="freescale-checkpoints", daemon=True)

    def __enter__(self) -> CheckpointQueue:
        self._thread.start()
        return self

    @property
    def worker_sink(self) -> CheckpointSink:
        # The Ray queue's own put: it pickles to the workers as an actor handle.
        return self.queue.put

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                event = self.queue.get(timeout=_POLL_S)
            except Empty:
                continue
            try:
                self.sink(event)
            except BaseException as exc:  # reported by __exit__: a checkpoint that cannot be written
                self._error = exc
                return

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            if self._error is None:
                for event in self.queue.get_nowait_batch(self.queue.qsize()):
                    self.sink(event)
        finally:
            self.queue.shutdown()
        if self._error is not None and exc_info[0] is None:
            raise self._error
