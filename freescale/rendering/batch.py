"""`freescale batch`: many renders in one job with the model kept warm. Each output is written as it
finishes, outputs that already exist are skipped (so a rerun finishes a batch), a bad or failed job is
reported and the rest go on, and a summary ends the run."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

from freescale.config.options import option, section, section_keys
from freescale.config.presets import check_values
from freescale.config.render_config import RenderConfig, build_config, load_preset
from freescale.errors import ConfigError
from freescale.models.families import ModelFamily

# The settings of the model a batch keeps warm: the model section of the option definition.
MODEL_KEYS = section_keys("model")
# `freescale batch`'s own flags; a job's message names a setting by its key, not by a render flag.
BATCH_FLAGS = frozenset(
    {"--output-dir", "--quiet", "--allow-outside", "--allow-pickle", "--jobs-at-once"}
    | {flag for o in section("cluster").options for flag in o.cli_flags}
)
_PATH_KEYS = ("output", "image", "mask", "input")
_FLAG = re.compile(r"--([a-z][a-z0-9-]*)")


@dataclass
class BatchItem:
    index: int
    output: str
    config: RenderConfig | None = None
    status: str = "pending"  # pending, done, skipped, failed
    message: str = ""
    frames: int = 0  # a done video job's frames
    seconds: float = 0.0  # a done job's wall time of rendering and writing (its share, side by side)


def output_root(path: str, output_dir: str | None = None) -> str:
    """Where a batch's outputs go: --output-dir, else the jobs file's folder."""
    return os.path.abspath(output_dir or os.path.dirname(os.path.abspath(path)))


def _read_yaml_jobs(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"batch file {path} is not valid UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"batch file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict) and set(data) - {"defaults", "jobs", "preset"}:
        raise ConfigError(f"batch file {path}: top-level keys are defaults, preset and jobs")
    defaults, jobs = ({}, data) if isinstance(data, list) else (data.get("defaults") or {}, data.get("jobs"))
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise ConfigError(f"batch file {path}: 'jobs' must be a list of option mappings")
    if not isinstance(defaults, dict):
        raise ConfigError(f"batch file {path}: 'defaults' must be a mapping of option names to values")
    if isinstance(data, dict) and data.get("preset"):
        if not isinstance(data["preset"], str):
            raise ConfigError(f"batch file {path}: preset {data['preset']!r} is not a preset name or file")
        defaults = {**load_preset(data["preset"]), **defaults}
    return [{**defaults, **job} for job in jobs]


def _read_prompts(path: str) -> list[dict[str, Any]]:
    """One job a line; a line that is not UTF-8 keeps its bytes as surrogates, so that job alone fails."""
    with open(path, "rb") as handle:
        lines = [raw.decode("utf-8", "surrogateescape").strip() for raw in handle.read().split(b"\n")]
    prompts = [line for line in lines if line and not line.startswith("#")]
    stem = os.path.splitext(os.path.basename(path))[0]
    return [{"prompt": p, "output": f"{stem}-{i:04d}.png"} for i, p in enumerate(prompts)]


def load_jobs(path: str, output_dir: str | None = None) -> list[dict[str, Any]]:
    """Jobs from YAML ({defaults: {...}, preset: NAME, jobs: [...]} or a list) or a prompts file (one per
    line). Relative outputs are relative to `output_dir` (default: the jobs file's folder), relative
    images, masks and input clips to the jobs file's folder. A bad file is an error; a bad job is left to
    plan_items, but the model settings, shared by every job, are checked here."""
    if not os.path.isfile(path):
        raise ConfigError(f"batch file {path}: no such file")
    base = os.path.dirname(os.path.abspath(path))
    jobs = _read_yaml_jobs(path) if path.endswith((".yaml", ".yml")) else _read_prompts(path)
    for number, job in enumerate(jobs):
        check_values({k: job[k] for k in MODEL_KEYS if k in job}, f"batch job {number}")
        job.setdefault("output", f"batch-{number:04d}.png")
        for key in _PATH_KEYS:
            value = job.get(key)
            if isinstance(value, str) and value and "\0" not in value and not os.path.isabs(value):
                job[key] = os.path.join(output_root(path, output_dir) if key == "output" else base, value)
        if job.get("lora"):
            job["lora"] = _loras_from(job["lora"], base)
    return jobs


def _loras_from(value: Any, base: str) -> list[Any]:
    """A job's LoRA list with relative files taken from the jobs file's folder, as images and clips are
    (the weight after a colon stays with its file)."""
    from freescale.config.lora_option import split_lora_text

    items = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and item and "\0" not in item:
            file, weight = split_lora_text(item)
            item = {"path": file if os.path.isabs(file) else os.path.join(base, file), "weight": weight}
        elif isinstance(item, dict) and isinstance(item.get("path"), str) and not os.path.isabs(item["path"]):
            item = {**item, "path": os.path.join(base, item["path"])}
        items.append(item)
    return items


def load_batch(
    jobs_file: str | None,
    input_dir: str | None,
    output_dir: str | None,
    preset: str | None = None,
    flags: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """`freescale batch`'s jobs, from a jobs file or (with `input_dir`) one video job a clip whose settings
    are `preset` and `flags`; and the folder every output must stay in. Both go to plan_items alike."""
    from freescale.rendering.clip_folder import folder_jobs

    flags = flags or {}
    if (jobs_file is None) == (input_dir is None):
        raise ConfigError("give a jobs file or --input-dir DIR (one of them)")
    if input_dir is not None:
        jobs = folder_jobs(input_dir, output_dir, preset, flags)
        check_values({k: jobs[0][k] for k in MODEL_KEYS if k in jobs[0]}, "the batch's settings")
        return jobs, os.path.abspath(output_dir)
    given = [k for k, v in (("preset", preset), *flags.items()) if v is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise ConfigError(f"{flag} is for --input-dir; a jobs file gives it in its defaults")
    jobs = load_jobs(jobs_file, output_dir)
    if not jobs:
        raise ConfigError(f"batch file {jobs_file} has no jobs")
    return jobs, output_root(jobs_file, output_dir)


def _in_batch_words(text: str) -> str:
    """A render message as a batch job's: `--steps` is the job's `steps`; batch's own flags stay."""

    def word(match: re.Match) -> str:
        flag = match.group(0)
        if flag in BATCH_FLAGS:
            return flag
        try:
            option(match.group(1).replace("-", "_"))
        except KeyError:
            return flag
        return match.group(1).replace("-", "_")

    return _FLAG.sub(word, text)


def _check_place(output: Any, root: str | None) -> None:
    if root is None or not isinstance(output, str):
        return
    inside = os.path.realpath(root)
    place = os.path.realpath(output)
    if os.path.commonpath([inside, place]) != inside:
        raise ConfigError(f"output {output} is outside {root}; pass --allow-outside to write there")


def _job_config(
    index: int,
    job: dict[str, Any],
    native_size: int,
    family: ModelFamily | None,
    root: str | None,
    allow_pickle: bool,
) -> RenderConfig:
    from freescale.inputs.video_reader import read_video_info
    from freescale.outputs.video.audio_remux import check_audio_fits

    check_values({k: v for k, v in job.items() if k not in MODEL_KEYS}, f"batch job {index}")
    _check_place(job["output"], root)
    config = build_config({**job, "allow_pickle": allow_pickle}, native_size, family=family)
    if config.is_video and config.input is not None:  # the clip's audio must fit the output's container
        check_audio_fits(read_video_info(config.input), config.output)
    return config


def job_message(exc: Exception) -> str:
    """A job's failure as one line of the batch's words."""
    text = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
    return _in_batch_words(text.splitlines()[0] if text else type(exc).__name__)


def plan_items(
    jobs: list[dict[str, Any]],
    native_size: int,
    family: ModelFamily | None = None,
    root: str | None = None,
    allow_pickle: bool = False,
) -> list[BatchItem]:
    """Validate every job before anything renders; a bad job (any error) is a failed item, not a failed
    batch, and so is a job whose output another job already writes. `family`: the shared model's (its
    FreeU defaults), None meaning SDXL; `root`: where outputs must stay (None: anywhere)."""
    models = {repr([job.get(k) for k in MODEL_KEYS]) for job in jobs}  # repr: a lora list is no dict key
    if len(models) > 1:
        shared = ", ".join(MODEL_KEYS)
        raise ConfigError(f"batch jobs must share {shared} (one warm model); give them in defaults")
    items, writers = [], {}
    for index, job in enumerate(jobs):
        item = BatchItem(index, str(job["output"]))
        try:
            item.config = _job_config(index, job, native_size, family, root, allow_pickle)
        except Exception as exc:  # whatever is wrong with one job fails that job only
            item.status, item.message = "failed", job_message(exc)
        if item.config is not None:
            place = os.path.realpath(item.output)
            if place in writers:
                item.config, item.status = None, "failed"
                item.message = f"output {item.output} is also job {writers[place]}'s; give each job its own"
            else:
                writers[place] = index
        if item.config is not None and os.path.exists(item.output):
            item.status, item.message = "skipped", "output exists"
        items.append(item)
    return items


def refuse_shared_failure(items: list[BatchItem]) -> None:
    """Every job refused with one and the same message: the batch's shared settings are wrong (a
    folder's flags, a jobs file's defaults), which is bad input for the whole command (exit 2)."""
    messages = {item.message for item in items if item.status == "failed"}
    if len(items) > 1 and len(messages) == 1 and all(item.status == "failed" for item in items):
        raise ConfigError(f"every job: {messages.pop()}")


def summary(items: list[BatchItem]) -> str:
    counts = {s: sum(item.status == s for item in items) for s in ("done", "skipped", "failed")}
    lines = [f"batch: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed"]
    videos = [item for item in items if item.status == "done" and item.frames]
    if videos:
        frames, seconds = sum(item.frames for item in videos), sum(item.seconds for item in videos)
        rate = frames / max(seconds, 1e-9)
        lines.append(f"video: {frames} frames rendered in {seconds:.1f}s, {rate:.2f} frames/s")
    for item in items:
        if item.status == "failed":
            lines.append(f"  item {item.index} ({item.output}) failed: {item.message}")
    return "\n".join(lines)
