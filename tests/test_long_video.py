"""Long clips rendered chunk by chunk: the chunk geometry, the output as the chunks' frames cross-faded where
they overlap, and a render stopped in a later chunk resumed to the same frames."""

import os

import numpy as np
import pytest
import torch
from test_video_render import frames_of

from freescale.cli.commands import main
from freescale.cluster.sharding.local_ranks import run_ranks
from freescale.cluster.sharding.rank_state import RankState
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.config.render_config import build_config
from freescale.models.loading import load_model, resolve_model_source
from freescale.outputs.checkpoints import CheckpointDir
from freescale.outputs.video.clip_output import crossfaded
from freescale.rendering.rank_render import ClipChunk, render_on_rank, take_strip
from freescale.tiling.frame_chunks import crossfade_weights, frame_chunks

# 9 frames in chunks (0, 5) (3, 8) (6, 9); windows of 3 every 2 frames inside each chunk.
LONG = ["a fox", "--frames", "9", "--chunk-frames", "5", "--chunk-overlap", "2", "--window", "3",
        "--window-stride", "2", "--noise", "shuffle", "--steps", "2", "--dilate-tau", "1", "--seed", "3",
        "--guidance", "1", "--quiet"]  # fmt: skip


def test_chunk_geometry():
    assert frame_chunks(16, 64, 8) == [(0, 16)] and frame_chunks(64, 64, 8) == [(0, 64)]
    assert frame_chunks(200, 64, 8) == [(0, 64), (56, 120), (112, 176), (168, 200)]
    assert frame_chunks(65, 64, 8) == [(0, 64), (56, 65)]  # the last may be short
    assert frame_chunks(10, 4, 0) == [(0, 4), (4, 8), (8, 10)]
    for frames in range(1, 60):
        chunks = frame_chunks(frames, 7, 3)
        assert chunks[0][0] == 0 and chunks[-1][1] == frames
        assert all(b[0] == a[0] + 4 and a[1] - b[0] <= 3 for a, b in zip(chunks, chunks[1:], strict=False))
    assert crossfade_weights((4, 7)) == [0.25, 0.5, 0.75] and crossfade_weights((3, 3)) == []
    a, b = np.full((1, 1, 3), 10, np.uint8), np.full((1, 1, 3), 50, np.uint8)
    assert crossfaded(a, b, 0.25).tolist() == [[[20, 20, 20]]]


VALUES = {"prompt": "a fox", "frames": 9, "chunk_frames": 5, "chunk_overlap": 2, "window": 3,
          "window_stride": 2, "noise": "shuffle", "steps": 2, "dilate_tau": 1, "seed": 3, "guidance": 1.0,
          "motion_adapter": "tiny", "overwrite": True}  # fmt: skip
CHUNKS = frame_chunks(9, 5, 2)  # (0, 5) (3, 8) (6, 9)


def render_chunks(group, output: str, chunks: tuple, frame_groups: int) -> dict[int, np.ndarray]:
    """On every rank (module level: run_ranks imports it by name): render `chunks`, `frame_groups` at a
    time; this rank's rows of every last-stage frame it holds."""
    model = load_model(resolve_model_source("tiny"), device="cpu")
    state = RankState(group.rank, group.world, group, model, model.device)
    config = build_config({**VALUES, "output": output}, native_size=128)
    render_on_rank(state, config, chunks=chunks, groups=frame_groups)
    rows = {}
    for chunk in chunks:
        for f in range(*chunk.frames):
            strips = []
            while (strip := take_strip(state, (1, f))) is not None:
                strips.append(strip)
            if strips:
                rows[f] = np.concatenate(strips)
    return rows


@pytest.fixture(scope="module")
def one_rank_chunks(tmp_path_factory):
    """Each chunk's last-stage frames, rendered alone on one rank."""
    torch.set_num_threads(2)
    output = str(tmp_path_factory.mktemp("chunks") / "o.mkv")
    chunks = []
    for index, chunk in enumerate(CHUNKS):
        rows = render_chunks(ShardGroup.single(), output, (ClipChunk(index, chunk),), 1)
        chunks.append([rows[f] for f in range(*chunk)])
    return chunks


def test_a_long_clip_is_its_chunks_cross_faded(tmp_path, one_rank_chunks):
    out = str(tmp_path / "long.mkv")
    assert main(["video", *LONG, "-o", out]) == 0
    frames = frames_of(out)
    assert frames.shape == (9, 256, 256, 3)
    chunks = one_rank_chunks
    weights = crossfade_weights((0, 2))
    expected = chunks[0][:3]
    expected += [crossfaded(e, chunks[1][i], weights[i]) for i, e in enumerate(chunks[0][3:])]
    expected += chunks[1][2:3]
    expected += [crossfaded(e, chunks[2][i], weights[i]) for i, e in enumerate(chunks[1][3:])]
    expected += chunks[2][2:]
    assert len(expected) == 9
    for f, frame in enumerate(expected):
        assert np.array_equal(frames[f], frame), f
    # The overlap is rendered twice from the same noise: the chunks agree there more than frames differ.
    shared = np.abs(chunks[0][3].astype(int) - chunks[1][0].astype(int)).mean()
    assert shared < np.abs(chunks[1][0].astype(int) - chunks[1][2].astype(int)).mean()


def test_chunks_over_groups_of_ranks_are_the_one_rank_chunks(tmp_path, one_rank_chunks):
    """Frames x bands: 4 ranks in 2 groups, each rendering its chunk over 2 row bands at once."""
    jobs = (ClipChunk(0, CHUNKS[0]), ClipChunk(1, CHUNKS[1]))
    ranks = run_ranks(4, render_chunks, str(tmp_path / "o.mkv"), jobs, 2)
    assert [sorted(r) for r in ranks] == [list(range(0, 5))] * 2 + [list(range(3, 8))] * 2
    for index, (start, end) in enumerate(CHUNKS[:2]):
        group = ranks[2 * index : 2 * index + 2]
        for f in range(start, end):
            frame = np.concatenate([r[f] for r in group])
            expected = one_rank_chunks[index][f - start]
            assert frame.shape == expected.shape
            assert np.abs(frame.astype(int) - expected.astype(int)).max() <= 1, (index, f)


def test_a_render_stopped_in_a_later_chunk_resumes_to_the_same_frames(tmp_path):
    torch.set_num_threads(2)
    plain, kept = str(tmp_path / "plain.mkv"), str(tmp_path / "kept.mkv")
    assert main(["video", *LONG, "-o", plain]) == 0
    ckpt = tmp_path / "ckpt"
    assert main(["video", *LONG, "-o", kept, "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"]) == 0
    assert np.array_equal(frames_of(plain), frames_of(kept))
    assert sorted(os.listdir(ckpt)) == ["chunk0000", "chunk0001", "chunk0002", "render.json"]
    # As if stopped in chunk 2's second stage: its stage 1 never finished, and chunk 3 never started.
    os.unlink(ckpt / "chunk0001" / "stage1.pt")
    for name in os.listdir(ckpt / "chunk0002"):
        os.unlink(ckpt / "chunk0002" / name)
    os.unlink(kept)
    os.unlink(kept + ".json")
    from freescale.cli.interrupts import resume_hint

    assert "continues from chunk 2/3, the start of stage 2" in resume_hint(str(ckpt), "video")
    assert main(["video", "--resume", str(ckpt), "--quiet"]) == 0
    assert np.array_equal(frames_of(plain), frames_of(kept))
    assert CheckpointDir(str(ckpt)).chunk(2).load(2).finished  # chunk 3 rendered again, and kept


@pytest.mark.parametrize("flags, message", [
    (["--chunk-frames", "0"], "--chunk-frames 0 must be at least 1"),
    (["--chunk-overlap", "5", "--chunk-frames", "5"], r"--chunk-overlap 5 must be at least 0 and less than"),
])  # fmt: skip
def test_bad_chunks_exit_2(tmp_path, capsys, flags, message):
    assert main(["video", "x", *flags, "-o", str(tmp_path / "o.mkv"), "--quiet"]) == 2
    assert __import__("re").search(message, capsys.readouterr().err)


def test_an_input_clip_is_decoded_once_over_its_chunks(tmp_path, monkeypatch):
    """Chunk after chunk the reader decodes on from where it stopped, the overlap still held; going back
    further reopens the clip. Then a video-to-video render in chunks reads its input once."""
    from test_video_io import make_clip

    from freescale.inputs import clip_reader
    from freescale.inputs.video_reader import iter_frames, read_video_info

    clip = make_clip(str(tmp_path / "in.mp4"), pts=[i * 40 for i in range(8)])
    every = [frame.pixels for frame in iter_frames(read_video_info(clip))]
    opened = []

    def counted(info):
        opened.append(info.path)
        return iter_frames(info)

    monkeypatch.setattr(clip_reader, "iter_frames", counted)
    for first, last in frame_chunks(8, 4, 2) + [(3, 5)]:
        got = list(clip_reader.clip_frames(clip, first, last, keep=2))
        assert len(got) == last - first
        assert all(np.array_equal(g, every[first + i]) for i, g in enumerate(got))
    assert len(opened) == 2  # once for the chunks, once more for (3, 5): behind the two frames kept
    opened.clear()
    out = str(tmp_path / "up.mkv")
    args = ["video", "--input", clip, "--chunk-frames", "4", "--chunk-overlap", "2", "--steps", "2"]
    assert main([*args, "--dilate-tau", "1", "--guidance", "1", "--quiet", "-o", out]) == 0
    assert frames_of(out).shape == (8, 96, 128, 3) and len(opened) == 1
