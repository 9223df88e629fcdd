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
from freescale.models.lora_files import LoraFile
from freescale.progress import Progress


def load_model_for(
    model: str,
    model_config: str | None,
    device: str | None,
    dtype: str | None,
    allow_pickle: bool = False,
    lora: tuple[LoraFile, ...] = (),
) -> LoadedModel:
    source = loading.resolve_model_source(model, model_config, allow_pickle, lora=lora)
    return loading.load_model(source, device, dtype)


class InProcessPool:
    """Rank 0 of a group of one, here: `run(fn, ...)` is `[fn(state, ...)]`. Nothing can be lost, so there
    is nothing to restart; the model is loaded once, at `start`, unless one is given."""

    world = 1
    backend = "in-process"
    broken = False  # a failed render leaves nothing behind that the next one could trip on

    def __init__(
        self,
        model: str = "tiny",
        model_config: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        progress: Progress | None = None,
        loaded: LoadedModel | None = None,
        allow_pickle: bool = False,
        lora: tuple[LoraFile, ...] = (),
    ) -> None:
        self.source = (model, model_config, device, dtype, allow_pickle, lora)
        self.progress = progress
        self.loaded = loaded
        self.state: RankState | None = None

    def start(self) -> None:
        model = self.loaded or load_model_for(*self.source)
        self.state = RankState(0, 1, ShardGroup.single(), model, model.device, progress=self.progress)

    def run(
        self, fn: Callable[..., Any], *args: Any, per_rank_args: list[Any] | None = None, **kwargs: Any
    ) -> list[Any]:
        mine = [per_rank_args[0]] if per_rank_args is not None else []
        return [fn(self.state, *mine, *args, **kwargs)]

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
