"""`freescale batch`: many renders in one job with the model kept warm. Each output is written as it
finishes, outputs that already exist are skipped (so a rerun finishes a batch), a failed item is
reported and the rest go on, and a summary ends the run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml

from freescale.config.options import section_keys
from freescale.config.render_config import PRESET_KEYS, RenderConfig, build_config, load_preset
from freescale.errors import ConfigError
from freescale.models.families import ModelFamily
from freescale.progress import Progress

# The settings of the model a batch keeps warm: the model section of the option definition.
MODEL_KEYS = section_keys("model")


@dataclass
class BatchItem:
    index: int
    output: str
    config: RenderConfig | None = None
    status: str = "pending"  # pending, done, skipped, failed
    message: str = ""


def load_jobs(path: str, output_dir: str | None = None) -> list[dict[str, Any]]:
    """Jobs from YAML ({defaults: {...}, jobs: [...]} or a list) or a prompts file (one per line).

    Relative paths in a job are relative to the jobs file's directory."""
    if not os.path.isfile(path):
        raise ConfigError(f"batch file {path}: no such file")
    base = os.path.dirname(os.path.abspath(path))
    if path.endswith((".yaml", ".yml")):
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"batch file {path} is not valid YAML: {exc}") from None
        defaults, jobs = (
            ({}, data) if isinstance(data, list) else (data.get("defaults", {}), data.get("jobs"))
        )
        if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
            raise ConfigError(f"batch file {path}: 'jobs' must be a list of option mappings")
        if isinstance(data, dict) and set(data) - {"defaults", "jobs", "preset"}:
            raise ConfigError(f"batch file {path}: top-level keys are defaults, preset and jobs")
        if isinstance(data, dict) and data.get("preset"):
            defaults = {**load_preset(data["preset"]), **defaults}
        jobs = [{**defaults, **job} for job in jobs]
    else:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
        prompts = [line for line in lines if line and not line.startswith("#")]
        stem = os.path.splitext(os.path.basename(path))[0]
        jobs = [{"prompt": p, "output": f"{stem}-{i:04d}.png"} for i, p in enumerate(prompts)]
    for number, job in enumerate(jobs):
        unknown = sorted(set(job) - PRESET_KEYS)
        if unknown:
            raise ConfigError(
                f"batch job {number}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(PRESET_KEYS))}"
            )
        job.setdefault("output", f"batch-{number:04d}.png")
        for key in ("output", "image", "mask"):
            if job.get(key) and not os.path.isabs(job[key]):
                job[key] = (
                    os.path.join(output_dir or base, job[key])
                    if key == "output"
                    else os.path.join(base, job[key])
                )
    return jobs


def plan_items(
    jobs: list[dict[str, Any]], native_size: int, family: ModelFamily | None = None
) -> list[BatchItem]:
    """Validate every job before anything renders; a bad job is a failed item, not a failed batch.
    `family`: the shared model's (its FreeU defaults); None means SDXL."""
    models = {tuple(job.get(k) for k in MODEL_KEYS) for job in jobs}
    if len(models) > 1:
        raise ConfigError("batch jobs must share model, model_config, device and dtype (one warm model)")
    items = []
    for index, job in enumerate(jobs):
        item = BatchItem(index, job["output"])
        try:
            item.config = build_config(dict(job), native_size, family=family)
        except ConfigError as exc:
            item.status, item.message = "failed", str(exc)
        if item.config is not None and os.path.exists(item.output):
            item.status, item.message = "skipped", "output exists"
        items.append(item)
    return items


def run_items(items: list[BatchItem], placement, progress: Progress) -> None:
    """Render the pending items on one warm Renderer. A lost worker is retried by the renderer itself (up
    to the placement's max_retries); an item that still fails is reported and the next one starts on a
    fresh pool."""
    from freescale.cluster.ray.worker_pool import WorkerLost
    from freescale.rendering.renderer import Renderer

    pending = [item for item in items if item.status == "pending"]
    if not pending:
        return
    with Renderer(pending[0].config, placement, progress) as renderer:
        for item in pending:
            progress.note(f"batch item {item.index}: {item.output}")
            try:
                renderer.render_to_files(item.config)
                item.status = "done"
            except (WorkerLost, ConfigError, NotImplementedError, ValueError, RuntimeError, OSError) as exc:
                item.status, item.message = "failed", f"{type(exc).__name__}: {exc}"


def summary(items: list[BatchItem]) -> str:
    counts = {s: sum(item.status == s for item in items) for s in ("done", "skipped", "failed")}
    lines = [f"batch: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"]
    for item in items:
        if item.status == "failed":
            lines.append(f"  item {item.index} ({item.output}) failed: {item.message}")
    return "\n".join(lines)
