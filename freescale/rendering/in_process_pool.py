"""A pool of one rank in the driver's own process, with the Ray worker pool's interface, so that a
one-worker render runs exactly the rank entry point and strip fetching that Ray renders run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from freescale.cluster.sharding.rank_state import RankState
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.method.snapshots import CheckpointSink
from freescale.models import loading
from freescale.models.loading import LoadedModel
from freescale.progress import Progress


def load_model_for(
    model: str, model_config: str | None, device: str | None, dtype: str | None, allow_pickle: bool = False
) -> LoadedModel:
    source = loading.resolve_model_source(model, model_config, allow_pickle)
    return loading.load_model(source, device, dtype)


class InProcessPool:
    """Rank 0 of a group of one, here: `run(fn, ...)` is `[fn(state, ...)]`. Nothing can be lost, so there
    is nothing to restart; the model is loaded once, at `start`, unless one is given."""

    world = 1
    backend = "in-process"

    def __init__(
        self,
        model: str = "tiny",
        model_config: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        progress: Progress | None = None,
        loaded: LoadedModel | None = None,
        allow_pickle: bool = False,
    ) -> None:
        self.source = (model, model_config, device, dtype, allow_pickle)
        self.progress = progress
        self.loaded = loaded
        self.state: RankState | None = None

    def start(self) -> None:
        model = self.loaded or load_model_for(*self.source)
        self.state = RankState(0, 1, ShardGroup.single(), model, model.device, progress=self.progress)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        return [fn(self.state, *args, **kwargs)]

    def run_on(self, rank: int, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.state, *args)

    @contextmanager
    def checkpoint_sink(self, save: CheckpointSink | None) -> Iterator[CheckpointSink | None]:
        """Where rank 0 hands its checkpoints: straight to `save`, in this process."""
        yield save

    def restarted(self) -> InProcessPool:
        return self

    def shutdown(self) -> None:
        self.state = None
