"""Render checkpoints: the whole latents of each finished stage and of the step in progress, saved
atomically in a directory, so a render continues after a lost worker or a stopped driver.

Resuming is exact: every random draw is keyed by (seed, purpose, stage, step), and the schedulers we
checkpoint mid-stage keep no state between steps beyond the step index.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from freescale.atomic_files import atomic_write
from freescale.config.options import section_keys
from freescale.config.render_config import DEFAULT_CHECKPOINT_EVERY, RenderConfig, recipe_values
from freescale.errors import ConfigError
from freescale.method.snapshots import CheckpointEvent, Snapshot

CONFIG_FILE = "render.json"
_EARLIER = "resuming from the checkpoint before it"
IN_PROGRESS_FILE = "in-progress.pt"

# Fields that only say where and how outputs are written: a checkpoint serves any of them.
_OUTPUT_FIELDS = section_keys("output")


def _render_fields(config: RenderConfig) -> dict:
    data = dataclasses.asdict(config)
    data["stages"] = [list(s) for s in config.stages]
    for name in _OUTPUT_FIELDS:
        data.pop(name)
    return json.loads(json.dumps(data))  # as stored: tuples become lists


def _atomic_save(obj, path: str) -> None:
    atomic_write(path, lambda temporary: torch.save(obj, temporary))


class CheckpointDir:
    """One render's checkpoints: `render.json` (the render's settings), `stage<k>.pt` for each finished
    stage, `in-progress.pt` for the latest step of the stage in progress."""

    def __init__(self, path: str, every: int = DEFAULT_CHECKPOINT_EVERY):
        if every < 1:
            raise ConfigError(f"--checkpoint-every {every} must be at least 1")
        self.path = path
        self.every = every

    def chunk(self, index: int) -> CheckpointDir:
        """The checkpoints of chunk `index` of a long clip (`chunk0003/`, the same files as a render's)."""
        return CheckpointDir(self._file(f"chunk{index:04d}"), self.every)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def stored_config(self) -> dict | None:
        """The settings of the render stored here, or None for an empty or new directory."""
        try:
            with open(self._file(CONFIG_FILE), encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"checkpoint directory {self.path}: cannot read {CONFIG_FILE}: {exc}") from None

    def claim(self, config: RenderConfig) -> None:
        """Make this directory the checkpoint of `config`; a directory holding another render is refused."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ConfigError(f"--checkpoint-dir {self.path} exists and is not a directory")
        stored = self.stored_config()
        wanted = {"config": _render_fields(config), "output": config.output}
        if stored is not None:
            if stored.get("config") != wanted["config"]:
                raise ConfigError(
                    f"checkpoint directory {self.path} holds a different render; resume it with "
                    f"`freescale render --resume {self.path}`, or give an empty directory"
                )
            return
        if os.path.isdir(self.path) and os.listdir(self.path):
            raise ConfigError(f"--checkpoint-dir {self.path} is not empty and holds no freescale checkpoint")
        os.makedirs(self.path, exist_ok=True)
        recipe = {**dataclasses.asdict(config), "stages": wanted["config"]["stages"]}
        text = json.dumps({**wanted, "recipe": recipe}, indent=2)
        atomic_write(self._file(CONFIG_FILE), lambda temporary: Path(temporary).write_text(text, "utf-8"))

    def save(self, event: CheckpointEvent) -> None:
        os.makedirs(self.path, exist_ok=True)  # a chunk's directory is made by its first checkpoint
        latents = event.latents.detach().cpu().clone()
        if event.step is None:
            _atomic_save(latents, self._file(f"stage{event.stage}.pt"))
            in_progress = self._file(IN_PROGRESS_FILE)
            if os.path.exists(in_progress):
                os.unlink(in_progress)  # superseded by the finished stage
        else:
            _atomic_save(
                {"stage": event.stage, "step": event.step, "latents": latents}, self._file(IN_PROGRESS_FILE)
            )

    def load(self, num_stages: int, warn: Callable[[str], None] | None = None) -> Snapshot:
        """The furthest good checkpoint: finished stages in order, then the step in progress. A file that
        does not load (truncated, corrupt, not a checkpoint) is named in one line through `warn` (default:
        stderr) and the render resumes from the checkpoint before it; it is replaced when rendered again."""
        warn = warn or _warn
        finished: list[torch.Tensor] = []
        while len(finished) < num_stages and os.path.exists(self._file(f"stage{len(finished)}.pt")):
            latents = self._read(f"stage{len(finished)}.pt", _is_latents, warn)
            if latents is None:
                return Snapshot(tuple(finished))
            finished.append(latents)
        if len(finished) < num_stages and os.path.exists(self._file(IN_PROGRESS_FILE)):
            saved = self._read(IN_PROGRESS_FILE, _is_step, warn)
            if saved is not None and saved["stage"] == len(finished):
                return Snapshot(tuple(finished), saved["step"], saved["latents"])
        return Snapshot(tuple(finished))

    def _read(self, name: str, valid: Callable[[Any], bool], warn: Callable[[str], None]) -> Any:
        path = self._file(name)
        try:
            saved = torch.load(path, weights_only=True)
        except Exception as exc:  # any failure to unpickle is a bad file (torch raises many kinds)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            warn(f"freescale: warning: checkpoint {path} is corrupt ({reason[:120]}); {_EARLIER}")
            return None
        if not valid(saved):
            warn(f"freescale: warning: checkpoint {path} holds no freescale latents; {_EARLIER}")
            return None
        return saved


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _is_latents(saved: Any) -> bool:
    return isinstance(saved, torch.Tensor) and saved.is_floating_point()


def _is_step(saved: Any) -> bool:
    return (
        isinstance(saved, dict)
        and all(isinstance(saved.get(k), int) for k in ("stage", "step"))
        and _is_latents(saved.get("latents"))
    )


def resume_values(path: str) -> dict:
    """The render settings stored in a checkpoint directory, as build_config values (for --resume)."""
    if not os.path.isdir(path):
        raise ConfigError(f"--resume {path}: no such directory")
    stored = CheckpointDir(path).stored_config()
    if stored is None:
        raise ConfigError(f"--resume {path}: no freescale checkpoint there ({CONFIG_FILE} is missing)")
    recipe = stored.get("recipe") if isinstance(stored, dict) else None
    if not isinstance(recipe, dict):
        raise ConfigError(f"--resume {path}: {CONFIG_FILE} holds no recipe; it is not a freescale checkpoint")
    return recipe_values(recipe, f"--resume {path} ({CONFIG_FILE})")
