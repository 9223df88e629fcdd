"""Video renders sharded over 2-4 gloo ranks, each holding a row band of every frame, equal the one-rank
render (and with the guidance batch split over two groups), for text-to-video and video-to-video with
latent and RGB upsampling. Every rank runs the production entry point, as test_sharded_render does."""

import numpy as np
import pytest
import torch
from test_video_io import make_clip

from freescale.cluster.sharding.local_ranks import run_ranks
from freescale.cluster.sharding.rank_state import RankState
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.rendering.rank_render import render_on_rank, take_strip

BASE = {"steps": 3, "dilate_tau": 2, "seed": 3, "motion_adapter": "tiny"}
FRAMES = 2


def _variants(tmp) -> dict:
    clip = make_clip(str(tmp / "in.mp4"), pts=[0, 40])  # 64x48, 2 frames: a 64x64 base, a 128x128 stage
    return {
        "text": {"prompt": "a red fox", "frames": FRAMES, "scale": 2},
        "input": {"input": clip, "prompt": "a fox", "size": "128x96"},
        "input-rgb": {"input": clip, "upsample": "rgb", "scale": 2},
        "text-sd15": {"prompt": "a fox", "frames": FRAMES, "scale": 2, "model": "tiny-sd15"},
        # longer than its window: windows (0, 4) (2, 6) and the tail (3, 7), shuffled noise
        "text-windows": {
            "prompt": "a fox",
            "frames": 7,
            "window": 4,
            "window_stride": 2,
            "noise": "shuffle",
            "scale": 2,
            "guidance": 1.0,
        },
    }


def render_video_variants(group, variants: dict, names: list[str], output: str, cfg_parallel: bool = False):
    """Each variant's latents and, per frame, this rank's rows of the last stage (module level: run_ranks
    imports it by name)."""
    from freescale.config.render_config import build_config
    from freescale.models.loading import load_model, resolve_model_source

    results = {}
    for name in names:
        values = {**BASE, **variants[name], "output": output}
        model = load_model(resolve_model_source(values.get("model", "tiny")), device="cpu")
        state = RankState(group.rank, group.world, group, model, model.device)
        config = build_config(values, native_size=128)
        result = render_on_rank(state, config, cfg_parallel=cfg_parallel)
        last = len(config.stages) - 1
        result["frames"] = []
        for f in range(config.frames):
            strips = []
            while (strip := take_strip(state, (last, f))) is not None:
                strips.append(strip)
            result["frames"].append(np.concatenate(strips) if strips else None)
        results[name] = result
    return results


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("video_sharding")
    variants = _variants(tmp)
    torch.set_num_threads(2)
    output = str(tmp / "o.mkv")
    return variants, output, render_video_variants(ShardGroup.single(), variants, list(variants), output)


@pytest.mark.parametrize(
    "world, names, cfg_parallel",
    [(2, ["text", "input-rgb"], False), (3, ["input", "text-windows"], False), (4, ["text-sd15"], False),
     (4, ["text", "input"], True)],
)  # fmt: skip
def test_sharded_video_equals_one_rank(one_rank, world, names, cfg_parallel):
    variants, output, reference = one_rank
    ranks = run_ranks(world, render_video_variants, variants, names, output, cfg_parallel)
    for name in names:
        expected, got = reference[name], [r[name] for r in ranks]
        for stage_ref, stage_got in zip(expected["latents"], got[0]["latents"], strict=True):
            assert stage_ref.shape == stage_got.shape and stage_ref.dim() == 5
            assert (stage_ref - stage_got).abs().max() <= 1e-4, name
        for f, frame_ref in enumerate(expected["frames"]):
            frame_got = np.concatenate([r["frames"][f] for r in got if r["frames"][f] is not None])
            assert frame_got.shape == frame_ref.shape
            assert np.abs(frame_got.astype(int) - frame_ref.astype(int)).max() <= 1, (name, f)
