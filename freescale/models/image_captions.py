"""A local image-to-text model (transformers: BLIP, Florence-2 ...) that writes an upscale's prompt from its
input: loaded from a directory only (local_files_only, no remote code), never downloaded."""

from __future__ import annotations

import json
import os

import numpy as np

from freescale.errors import ConfigError

MAX_CAPTION_TOKENS = 60  # a prompt's worth: CLIP reads 77 tokens
# Florence-2 answers a task prompt; the others caption an image alone.
_TASK_PROMPTS = {"florence2": "<DETAILED_CAPTION>"}


def _model_type(path: str) -> str:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
        return str(json.load(handle).get("model_type", ""))


def check_caption_model(path: str) -> None:
    """--caption-model DIR is a directory holding a transformers config.json (read, nothing loaded)."""
    if not os.path.isdir(path):
        raise ConfigError(f"--caption-model {path}: no such directory (a local image-to-text model)")
    try:
        _model_type(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--caption-model {path} has no readable config.json ({exc})") from None


def caption_image(path: str, rgb: np.ndarray) -> str:
    """The caption the model in `path` writes for `rgb` (H, W, 3) uint8: greedy decoding, special tokens
    dropped, whitespace collapsed (may be empty)."""
    import torch
    import transformers
    from PIL import Image

    auto_model = (
        getattr(transformers, "AutoModelForImageTextToText", None) or transformers.AutoModelForVision2Seq
    )
    try:
        processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
        model = auto_model.from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as exc:
        message = " ".join(str(exc).split())
        raise ConfigError(
            f"--caption-model {path} does not load as an image-to-text model ({message})"
        ) from None
    task = _TASK_PROMPTS.get(_model_type(path))
    kwargs = {"text": task} if task is not None else {}
    inputs = processor(images=Image.fromarray(rgb), return_tensors="pt", **kwargs)
    with torch.no_grad():
        ids = model.generate(**inputs, max_new_tokens=MAX_CAPTION_TOKENS, do_sample=False, num_beams=1)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    if task is not None:
        text = text.replace(task, "")
    return " ".join(text.split())
