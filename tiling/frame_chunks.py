"""A long clip rendered in chunks of frames, one after another, so that memory does not grow with its
length: where the chunks start and end, and how the frames two chunks share cross-fade."""

from __future__ import annotations

Chunk = tuple[int, int]  # frames [start, end)


def frame_chunks(frames: int, chunk: int, overlap: int) -> list[Chunk]:
    """Chunks of at most `chunk` frames, each starting `chunk - overlap` frames after the one before,
    until one ends at the last frame (that one may be shorter); one chunk when the clip fits in one."""
    step = chunk - overlap
    chunks = [(0, min(frames, chunk))]
    while chunks[-1][1] < frames:
        start = chunks[-1][0] + step
        chunks.append((start, min(frames, start + chunk)))
    return chunks


def crossfade_weights(overlap: Chunk) -> list[float]:
    """The later chunk's weight for each frame of an overlap [start, end) of two chunks: rising linearly
    from near 0 to near 1 (n frames: 1/(n+1) ... n/(n+1)); the earlier chunk has the rest."""
    start, end = overlap
    n = end - start
    return [(i + 1) / (n + 1) for i in range(n)]
