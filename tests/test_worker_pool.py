"""WorkerPool on an embedded local Ray: collectives across actors, model reuse, worker death, cleanup."""

import os
import sys
import time

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # the test cluster must not phone home
import ray  # noqa: E402  (a hard dependency: never skipped)

# Workers cannot import this test module (tests/ is not on their path), so ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

from freescale.cluster.ray.worker_pool import WorkerLost, WorkerPool  # noqa: E402
from freescale.errors import ConfigError  # noqa: E402

BANDS = [(0, 8), (8, 12), (12, 20)]
ROWS = 20
# Collective timeout of the shared pool: a dead worker must be reported well within it.
DEATH_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def ray_cluster():
    assert not ray.is_initialized()
    ray.init(num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_cluster):
    # One pool for every actor test: each worker process imports freescale (and so diffusers) and loads
    # the model, which is most of this module's runtime on a 2-core machine.
    with WorkerPool(3, model="tiny", timeout_s=DEATH_TIMEOUT_S) as p:
        yield p
    assert ray.is_initialized(), "a pool that joined a running Ray must not shut it down"


def _full_tensor() -> torch.Tensor:
    return torch.arange(2 * ROWS * 5, dtype=torch.float32).reshape(2, ROWS, 5)


def sum_of_ranks(state):
    value = state.group.all_reduce_sum(torch.tensor([float(state.rank + 1)]))
    return state.rank, state.world, value.item()


def rows_exchange(state, bands, needs):
    local = _full_tensor()[:, bands[state.rank][0] : bands[state.rank][1]]
    gathered = state.group.all_gather_rows(local, bands, dim=1)
    fetched = state.group.fetch_rows(local, bands, needs, dim=1)
    return gathered, fetched


def model_identity(state):
    return state.rank, id(state.model), state.model.identity, str(state.device)


def tag_with_rank(state, mine, shared, scale=1):
    return state.rank, mine, shared * scale


def die_on_rank_one(state):
    if state.rank == 1:
        os._exit(1)
    state.group.all_reduce_sum(torch.ones(1))
    return state.rank


def _alive_actor_ids() -> set[str]:
    # ray.util.state.list_actors needs the dashboard, which the test cluster skips; ask the GCS directly.
    from ray._private.state import actors

    return set(actors(actor_state_name="ALIVE"))


def test_all_reduce_across_three_workers(pool):
    assert pool.world == 3 and pool.backend == "gloo"
    assert pool.run(sum_of_ranks) == [(0, 3, 6.0), (1, 3, 6.0), (2, 3, 6.0)]


def test_fetch_and_gather_rows_with_unequal_bands(pool):
    needs = [(max(a - 3, 0), min(b + 3, ROWS)) for a, b in BANDS]
    full = _full_tensor()
    for rank, (gathered, fetched) in enumerate(pool.run(rows_exchange, BANDS, needs)):
        assert torch.equal(gathered, full)
        lo, hi = needs[rank]
        assert torch.equal(fetched, full[:, lo:hi]), rank


def test_model_loaded_once_per_worker(pool):
    first = pool.run(model_identity)
    second = pool.run(model_identity)
    assert first == second
    assert [r[0] for r in first] == [0, 1, 2]
    assert all(r[2] == "tiny(seed=0)" and r[3] == "cpu" for r in first)


def test_per_rank_and_shared_args(pool):
    out = pool.run(tag_with_rank, 10, per_rank_args=["a", "b", "c"], scale=2)
    assert out == [(0, "a", 20), (1, "b", 20), (2, "c", 20)]


def test_bad_arguments_fail_before_ray_is_touched(monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray must not be touched for bad arguments")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(ray, "is_initialized", no_ray)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="num_workers"):
            WorkerPool(bad)
    with pytest.raises(ConfigError, match="strategy"):
        WorkerPool(2, strategy="CLOSE")


def test_too_many_gpu_workers_fails_fast(ray_cluster):
    start = time.monotonic()
    with pytest.raises(ConfigError, match="GPU"):
        with WorkerPool(2, model=None, use_gpu=True, timeout_s=60):
            pass
    assert time.monotonic() - start < 5
    assert ray.is_initialized()


def test_dead_worker_raises_worker_lost_and_cleans_up(pool):
    # Last test on the shared pool, because a worker death leaves the pool unusable.
    ids = set(pool.actor_ids)
    pg_id = pool.placement_group_id
    assert ids <= _alive_actor_ids()
    start = time.monotonic()
    with pytest.raises(WorkerLost) as info:
        pool.run(die_on_rank_one)
    elapsed = time.monotonic() - start
    assert info.value.rank == 1 and info.value.pid > 0
    assert "worker rank 1 (pid " in str(info.value)
    assert elapsed < DEATH_TIMEOUT_S
    with pytest.raises(RuntimeError, match="unusable"):
        pool.run(sum_of_ranks)
    pool.__exit__(None, None, None)
    assert not ids & _alive_actor_ids()
    assert ray.util.placement_group_table()[pg_id]["state"] == "REMOVED"
