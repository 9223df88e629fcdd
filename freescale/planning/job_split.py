"""How a batch's jobs go over the workers: G groups of workers / G workers, each rendering one job at a time
(side by side), or every job sharded over all of them (G = 1); the split whose estimate finishes first,
among those whose per-worker memory fits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from freescale.errors import ConfigError
from freescale.planning.plan import GIB, Plan, plan_request


@dataclass(frozen=True)
class JobSplit:
    groups: int  # jobs rendered at once
    workers_each: int  # workers per job
    seconds: float  # the cost model's estimate of every job, in rounds of `groups`
    sharded_seconds: float  # the same, every job sharded over all the workers one after another

    def describe(self, jobs: int) -> str:
        workers = self.groups * self.workers_each
        if self.groups == 1:
            return (f"batch plan: {jobs} jobs one after another, each on all {workers} workers "
                    f"(about {self.seconds:.0f}s by the cost model)")  # fmt: skip
        each = f"{self.workers_each} worker{'s' if self.workers_each > 1 else ''}"
        return (f"batch plan: {jobs} jobs side by side, {self.groups} at a time on {each} each (about "
                f"{self.seconds:.0f}s by the cost model; each sharded over all {workers} workers: about "
                f"{self.sharded_seconds:.0f}s)")  # fmt: skip


def rounds_seconds(plans: list[Plan], groups: int) -> float:
    """The estimate of `plans` (each on its group's workers) in rounds of `groups` jobs, in order: a round
    lasts as long as its longest job, since the next round starts when every group is done."""
    return sum(max(p.total_s for p in plans[i : i + groups]) for i in range(0, len(plans), groups))


def job_split(plans: list[Plan], memory_bytes: float | None = None, groups: int | None = None) -> JobSplit:
    """The split of the workers for jobs whose plans on all of them are `plans`: every G dividing the
    workers and at most the jobs, each job re-planned on workers / G workers and fitting `memory_bytes`;
    the soonest done, the fewer groups on a tie. `groups`: the user's choice instead (--jobs-at-once), an
    error naming the job when one does not fit. Jobs with --cfg-parallel are never split."""
    workers = plans[0].request.workers
    sharded = rounds_seconds(plans, 1)
    if groups is not None:
        chunk = _replanned_all(plans, workers // groups)
        for index, plan in enumerate(chunk):
            if memory_bytes is not None and plan.peak_bytes > memory_bytes:
                raise ConfigError(
                    f"--jobs-at-once {groups}: job {index} needs about {plan.peak_bytes / GIB:.1f} GiB per "
                    f"worker on {workers // groups}, but the devices have {memory_bytes / GIB:.1f} GiB"
                )
        return JobSplit(groups, workers // groups, rounds_seconds(chunk, groups), sharded)
    options = [JobSplit(1, workers, sharded, sharded)]
    if any(p.request.cfg_parallel for p in plans):
        return options[0]
    for count in range(2, min(workers, len(plans)) + 1):
        if workers % count:
            continue
        chunk = _replanned_all(plans, workers // count)
        if memory_bytes is not None and any(p.peak_bytes > memory_bytes for p in chunk):
            continue
        options.append(JobSplit(count, workers // count, rounds_seconds(chunk, count), sharded))
    return min(options, key=lambda s: (s.seconds, s.groups))


def _replanned_all(plans: list[Plan], workers: int) -> list[Plan]:
    return [
        p if p.request.workers == workers
        else plan_request(dataclasses.replace(p.request, workers=workers), p.model, p.device, p.link)
        for p in plans
    ]  # fmt: skip


def check_jobs_at_once(value: str, workers: int, cfg_parallel: bool) -> int | None:
    """--jobs-at-once: 'auto' (None: the cost model picks) or a whole number dividing the workers."""
    if value == "auto":
        return None
    try:
        groups = int(value)
    except ValueError:
        groups = 0
    if groups < 1 or workers % groups:
        raise ConfigError(f"--jobs-at-once {value!r} must be 'auto' or a whole number dividing the "
                          f"{workers} workers")  # fmt: skip
    if groups > 1 and cfg_parallel:
        raise ConfigError(f"--jobs-at-once {value} cannot go with --cfg-parallel (one job at a time)")
    return groups
