"""One warning line when a prompt is longer than the pipeline's text encoders read (77 tokens for CLIP):
the encoders see only its start, and nothing else would say so."""

from __future__ import annotations

import sys
from typing import TextIO

_TOKENIZERS = ("tokenizer", "tokenizer_2")


def warn_if_truncated(pipe, prompt: str, negative_prompt: str | None, stream: TextIO | None = None) -> None:
    """Count each text with every tokenizer of `pipe`; a text longer than the shortest window (start and end
    tokens included) gets one line on `stream` (default: stderr)."""
    tokenizers = [t for t in (getattr(pipe, name, None) for name in _TOKENIZERS) if t is not None]
    if not tokenizers:
        return
    for what, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
        if not text:
            continue
        counts = [
            (len(t(text, truncation=False, verbose=False).input_ids), t.model_max_length) for t in tokenizers
        ]
        over = [(count, limit) for count, limit in counts if count > limit]
        if over:
            count, limit = max(over, key=lambda pair: pair[0] - pair[1])
            print(
                f"freescale: warning: the {what} is {count} tokens but the text encoder reads {limit}; "
                f"what follows token {limit} is ignored",
                file=stream or sys.stderr,
                flush=True,
            )
