"""WorkerPool: N RenderWorker actors in one placement group, one torch.distributed group, one model each."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ray
import torch.distributed as dist
from ray.exceptions import NodeDiedError, OutOfMemoryError, RayActorError, WorkerCrashedError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from freescale.cluster.ray.checkpoint_queue import CheckpointQueue
from freescale.cluster.ray.session import RaySession, kill_started_processes, started_ray_here
from freescale.cluster.ray.worker import RenderWorker
from freescale.errors import ConfigError
from freescale.method.snapshots import CheckpointSink

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# RayActorError covers ActorDiedError and ActorUnavailableError: the actor's process or node is gone.
_ACTOR_DEATH = (RayActorError, WorkerCrashedError, NodeDiedError, OutOfMemoryError)
# Once one rank fails, how long to keep waiting for the others: a dead peer's own call reports its death
# within about a second, and that report, not the survivors' broken collectives, names the culprit.
_GRACE_S = 5.0
_SHUTDOWN_WAIT_S = 10.0
_READ_WAIT_S = 1.0
_MAX_CAUSE_CHARS = 300
_COLLECTIVE_FAILURE_TEXT = ("connection closed by peer", "connection reset by peer", "timed out", "timeout")


class WorkerLost(RuntimeError):
    """A worker died (or stopped answering) during a pool call; the render cannot continue on this pool."""

    def __init__(self, rank: int, node: str, pid: int, cause: str, what: str = "died") -> None:
        super().__init__(f"worker rank {rank} (pid {pid} on node {node}) {what} during the render: {cause}")
        self.rank = rank
        self.node = node
        self.pid = pid
        self.retries: int | None = None  # set by a retry loop that gave up: how many fresh pools it tried


def _summary(exc: BaseException) -> str:
    """The last non-empty line of an error: Ray puts the remote traceback first and the message last."""
    text = str(getattr(exc, "cause", None) or exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1].strip() if lines else type(exc).__name__
    return last if len(last) <= _MAX_CAUSE_CHARS else last[:_MAX_CAUSE_CHARS] + "..."


def _fits(capacity: dict[str, float], bundle: dict[str, float]) -> int:
    """How many bundles fit into a node's total resources."""
    return int(min(capacity.get(key, 0.0) // need for key, need in bundle.items()))


class WorkerPool:
    """Context manager owning Ray (if it started it), a placement group and one actor per rank."""

    def __init__(
        self,
        num_workers: int,
        model: str | None = "tiny",
        model_config: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        use_gpu: bool | None = None,
        strategy: str = "PACK",
        address: str | None = None,
        timeout_s: float = 600,
        cpus_per_worker: float = 1,
        start_timeout_s: float = 600,
        allow_pickle: bool = False,
        lora: tuple = (),
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ConfigError(f"num_workers must be an integer >= 1, got {num_workers!r}")
        if strategy not in STRATEGIES:
            raise ConfigError(f"strategy {strategy!r} is not a placement strategy; use one of {STRATEGIES}")
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s!r}")
        if not start_timeout_s > 0:
            raise ConfigError(f"start_timeout_s must be > 0, got {start_timeout_s!r}")
        if not cpus_per_worker > 0:
            raise ConfigError(f"cpus_per_worker must be > 0, got {cpus_per_worker!r}")
        self.world = num_workers
        self.model = model
        self.model_config = model_config
        self.device = device
        self.dtype = dtype
        self.allow_pickle = allow_pickle  # the workers may load pickled weights (--allow-pickle)
        self.lora = tuple(lora)  # LoRA files (freescale.models.lora_files) each worker fuses at load
        self.use_gpu = use_gpu
        self.strategy = strategy
        self.address = address
        self.timeout_s = float(timeout_s)  # bounds each collective, so a dead peer cannot hang the rest
        self.start_timeout_s = float(start_timeout_s)  # placement and actor start-up, slow on busy clusters
        self.cpus_per_worker = float(cpus_per_worker)
        self.backend: str | None = None
        self._started_ray = False
        self._pg: Any = None
        self._actors: list[Any] = []
        self._pids: list[int] = []
        self._nodes: list[str] = []
        self._broken = False
        self._interrupted = False  # a signal stopped a call (see shutdown)
        # Calls a failed or interrupted gather left unread: read in `shutdown`, so that Ray does not print
        # their errors (the survivors' broken collectives, after the culprit is named) as "Unhandled".
        self._unread: list[Any] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def start(self) -> None:
        """Join or start Ray, reserve one bundle per rank, start the actors and form the process group."""
        if self._actors:
            raise RuntimeError("WorkerPool already started")
        try:
            self._start()
        except BaseException:
            self.shutdown()
            raise

    def _start(self) -> None:
        session = RaySession(self.address)  # the command's session when there is one, else our own
        session.ensure()
        self._started_ray = self._started_ray or session.started
        use_gpu = self.use_gpu if self.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
        bundle = {"CPU": self.cpus_per_worker}
        if use_gpu:
            bundle["GPU"] = 1.0
        self._check_fits(bundle)
        self._pg = ray.util.placement_group([dict(bundle) for _ in range(self.world)], strategy=self.strategy)
        if not self._pg.wait(timeout_seconds=self.start_timeout_s):
            raise RuntimeError(
                f"placement group of {self.world} x {bundle} ({self.strategy}) was not ready after "
                f"{self.start_timeout_s:g} s; cluster has {ray.cluster_resources()}, "
                f"available now {ray.available_resources()}"
            )
        actor_cls = ray.remote(
            num_cpus=self.cpus_per_worker, num_gpus=1 if use_gpu else 0, max_restarts=0, max_task_retries=0
        )(RenderWorker)
        self._actors = [
            actor_cls.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement_group=self._pg, placement_group_bundle_index=rank
                )
            ).remote()
            for rank in range(self.world)
        ]
        wait = self.start_timeout_s
        self._pids = ray.get([a.pid.remote() for a in self._actors], timeout=wait)
        self._nodes = ray.get([a.node_address.remote() for a in self._actors], timeout=wait)
        address, port = ray.get(self._actors[0].address_and_port.remote(), timeout=wait)
        backend = "nccl" if use_gpu else "gloo"
        setup = [
            a.setup.remote(
                rank,
                self.world,
                address,
                port,
                backend,
                self.timeout_s,
                self.model,
                self.model_config,
                self.device,
                self.dtype,
                self.allow_pickle,
                self.lora,
            )
            for rank, a in enumerate(self._actors)
        ]
        self.backend = self._gather(setup)[0]

    def _check_fits(self, bundle: dict[str, float]) -> None:
        """Fail fast when the cluster can never hold the bundles, instead of waiting out the timeout."""
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        per_node = [_fits(capacity, bundle) for capacity in nodes]
        if self.strategy == "STRICT_PACK":
            fit = max(per_node, default=0)
        elif self.strategy == "STRICT_SPREAD":
            fit = sum(1 for n in per_node if n >= 1)
        else:
            fit = sum(per_node)
        if fit < self.world:
            totals = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
            totals.setdefault("GPU", 0.0)
            raise ConfigError(
                f"asked for {self.world} workers of {bundle} each ({self.strategy}), but the cluster "
                f"({len(nodes)} node(s), {totals} in all) can hold only {fit}"
            )

    def restarted(self) -> WorkerPool:
        """A fresh pool with the same settings, started, after shutting this one down (after a lost
        worker). Ray keeps running in between; the new pool stops it at the end if this one would have."""
        owned, self._started_ray = self._started_ray, False
        self.shutdown()
        fresh = WorkerPool(
            self.world, model=self.model, model_config=self.model_config, device=self.device,
            dtype=self.dtype, use_gpu=self.use_gpu, strategy=self.strategy, address=self.address,
            timeout_s=self.timeout_s, cpus_per_worker=self.cpus_per_worker,
            start_timeout_s=self.start_timeout_s, allow_pickle=self.allow_pickle, lora=self.lora,
        )  # fmt: skip
        fresh._started_ray = owned
        try:
            fresh.start()
        except BaseException:
            fresh.shutdown()
            raise
        return fresh

    def shutdown(self) -> None:
        """Kill every actor, remove the placement group and stop Ray if this pool started it; idempotent."""
        actors, self._actors = self._actors, []
        if self._interrupted and started_ray_here():
            # Stopped by a signal, which may have reached Ray's own processes too (sent to the whole process
            # group): Ray calls could wait a minute for them. The workers of an embedded Ray are local
            # processes, killed by pid (orphaned, they are no longer our children); the session kills the
            # rest.
            for pid in self._pids if actors else []:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self._unread, self._pg = [], None
            if self._started_ray:  # a pool that started Ray itself (not in a command's session)
                kill_started_processes()
                ray.shutdown()
                self._started_ray = False
            return
        if actors and not self._broken:
            # Leave the group cleanly when it is healthy; a broken one could block, so it is just killed.
            try:
                ray.get([a.shutdown.remote() for a in actors], timeout=_SHUTDOWN_WAIT_S)
            except Exception:
                pass
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if actors:
            # ray.kill returns before the actors are gone; a call on a killed actor fails once it is dead.
            pings = [a.ping.remote() for a in actors]
            ray.wait(pings, num_returns=len(pings), timeout=_SHUTDOWN_WAIT_S)
            self._unread += pings
        unread, self._unread = self._unread, []
        _read_quietly(unread)
        if self._pg is not None:
            try:
                ray.util.remove_placement_group(self._pg)
            except Exception:
                pass
            self._pg = None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- calls -------------------------------------------------------------------------------------

    @property
    def actor_ids(self) -> list[str]:
        return [a._actor_id.hex() for a in self._actors]

    @property
    def broken(self) -> bool:
        """A run failed: the pool is unusable (its process group may be mid-collective)."""
        return self._broken

    @property
    def placement_group_id(self) -> str | None:
        return self._pg.id.hex() if self._pg is not None else None

    def run(
        self, fn: Callable[..., Any], *args: Any, per_rank_args: list[Any] | None = None, **kwargs: Any
    ) -> list[Any]:
        """fn(state, [per_rank_args[rank],] *args, **kwargs) on every rank at once; results in rank order.

        `fn` must be a module-level function. Raises WorkerLost when a worker dies (or hangs while its
        peers fail); after any failure the pool is unusable, since the process group may be mid-collective.
        """
        if not self._actors:
            raise RuntimeError("WorkerPool is not started; use it as a context manager")
        if self._broken:
            raise RuntimeError("WorkerPool is unusable after a failed run; start a new pool")
        if per_rank_args is not None and len(per_rank_args) != self.world:
            raise ValueError(f"per_rank_args has {len(per_rank_args)} entries for {self.world} ranks")
        # Put shared arguments in the object store once instead of serializing them once per rank.
        shared_args = [a if isinstance(a, ray.ObjectRef) else ray.put(a) for a in args]
        shared_kwargs = {k: v if isinstance(v, ray.ObjectRef) else ray.put(v) for k, v in kwargs.items()}
        refs = []
        for rank, actor in enumerate(self._actors):
            mine = [per_rank_args[rank]] if per_rank_args is not None else []
            refs.append(actor.run.remote(fn, *mine, *shared_args, **shared_kwargs))
        return self._gather(refs)

    @contextmanager
    def checkpoint_sink(self, save: CheckpointSink | None) -> Iterator[CheckpointSink | None]:
        """Where rank 0 hands its checkpoints: a Ray queue that a driver thread drains into `save`."""
        if save is None:
            yield None
            return
        with CheckpointQueue(save) as queue:
            yield queue.worker_sink

    def run_on(self, rank: int, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(state, *args) on one rank (the others idle), e.g. to fetch a piece of its result."""
        if self._broken:
            raise RuntimeError("WorkerPool is unusable after a failed run; start a new pool")
        return self._gather([self._actors[rank].run.remote(fn, *args)], [rank])[0]

    def _gather(self, refs: list[Any], ranks: list[int] | None = None) -> list[Any]:
        """Wait for one call per rank; on failure prefer naming the rank whose actor died. A gather that
        does not return (a failure, or an interruption while waiting) leaves the pool unusable."""
        try:
            return self._gather_all(refs, ranks)
        except BaseException as exc:
            self._broken = True  # some calls may still run: shutdown must not wait for them
            self._interrupted = self._interrupted or isinstance(exc, KeyboardInterrupt)
            self._unread += refs
            raise

    def _gather_all(self, refs: list[Any], ranks: list[int] | None) -> list[Any]:
        ranks = ranks if ranks is not None else list(range(len(refs)))
        rank_of = dict(zip(refs, ranks, strict=True))
        index_of = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        pending = list(refs)
        failure: tuple[int, Exception] | None = None
        deadline: float | None = None
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, pending = ray.wait(pending, num_returns=1, timeout=timeout)
            if not ready:
                break
            for ref in ready:
                rank = rank_of[ref]
                try:
                    results[index_of[ref]] = ray.get(ref)
                except _ACTOR_DEATH as exc:
                    self._broken = True
                    raise WorkerLost(rank, self._nodes[rank], self._pids[rank], _summary(exc)) from exc
                except Exception as exc:
                    self._broken = True
                    if failure is None:
                        failure = (rank, exc)
                        deadline = time.monotonic() + min(_GRACE_S, self.timeout_s)
        if failure is None:
            return results
        rank, exc = failure
        if pending and _is_collective_failure(exc):
            # Nobody died, but a rank is still busy while its peers' collectives failed: it is the one stuck.
            stuck = rank_of[pending[0]]
            raise WorkerLost(
                stuck, self._nodes[stuck], self._pids[stuck], f"rank {rank}: {_summary(exc)}", "hung"
            ) from exc
        cause = getattr(exc, "cause", None)  # the rank's own exception, without Ray's wrapping text
        if isinstance(cause, Exception):
            raise cause from exc
        raise exc


def _read_quietly(refs: list[Any]) -> None:
    """Read the calls that ended, discarding their results and errors. Called once the actors are dead,
    when every call of theirs has ended: the short wait only bounds a node that stopped answering."""
    if not refs:
        return
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=_READ_WAIT_S)
    for ref in done:
        try:
            ray.get(ref, timeout=0)
        except Exception:
            pass


def _is_collective_failure(exc: BaseException) -> bool:
    """A collective that failed because of a peer; gloo raises plain RuntimeErrors, so match their text."""
    # Only the remote exception itself: the traceback Ray adds could mention "timeout" in source lines.
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, getattr(dist, "DistError", ())):
        return True
    text = str(cause).lower()
    return any(s in text for s in _COLLECTIVE_FAILURE_TEXT)
