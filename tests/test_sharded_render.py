"""Whole renders sharded over 2-4 gloo ranks equal the one-rank render (SPEC exactness, DESIGN).

Every rank runs the production rank entry point (`render_on_rank`, as the in-process pool and the Ray
workers do) and its strips are fetched with `take_strip`, as the driver fetches them."""

import numpy as np
import pytest
import torch
from PIL import Image

from freescale.cluster.sharding.local_ranks import run_ranks
from freescale.cluster.sharding.rank_state import RankState
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.rendering.rank_render import render_on_rank, take_strip

BASE = {"prompt": "a red fox", "scale": 4, "steps": 4, "dilate_tau": 3, "seed": 7}


def _inputs(tmp):
    mask = np.zeros((50, 30), dtype=np.uint8)
    mask[10:40, 5:20] = 255
    Image.fromarray(mask).save(tmp / "mask.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(tmp / "base.png")
    return {
        "normal": {},
        "fast": {"fast_mode": True},
        "mask": {"mask": str(tmp / "mask.png"), "cosine_scale": 3.0, "cosine_scale_bg": 0.5},
        "image": {"image": str(tmp / "base.png")},
    }


def render_variants(group, variants: dict, output: str, cfg_parallel: bool = False, model_name: str = "tiny"):
    from freescale.config.render_config import build_config
    from freescale.models.loading import load_model, resolve_model_source

    model = load_model(resolve_model_source(model_name), device="cpu")
    state = RankState(group.rank, group.world, group, model, model.device)
    results = {}
    for name, values in variants.items():
        config = build_config({**BASE, **values, "model": model_name, "output": output}, native_size=128)
        result = render_on_rank(state, config, cfg_parallel=cfg_parallel)
        strips = []
        while (strip := take_strip(state, len(config.stages) - 1)) is not None:
            strips.append(strip)
        result["rows"] = np.concatenate(strips) if strips else None  # None: a rank with no image rows
        results[name] = result
    return results


def assemble(ranks: list[dict]) -> np.ndarray:
    """The last stage's image: every rank's rows, in rank order, as the driver writes them."""
    return np.concatenate([r["rows"] for r in ranks if r["rows"] is not None], axis=0)


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded")
    variants = _inputs(tmp)
    torch.set_num_threads(2)
    return tmp, variants, render_variants(ShardGroup.single(), variants, str(tmp / "o.png"))


def check_equal(reference: dict, ranks: list[dict], names: list[str]) -> None:
    """Same latents to 1e-4 at every stage, same final image to one level."""
    for name in names:
        expected, got = reference[name], [r[name] for r in ranks]
        for stage_ref, stage_got in zip(expected["latents"], got[0]["latents"], strict=True):
            assert (stage_ref - stage_got).abs().max() <= 1e-4, name
        image_ref = assemble([expected]).astype(int)
        image_got = assemble(got).astype(int)
        assert image_got.shape == image_ref.shape == (512, 512, 3)
        assert np.abs(image_got - image_ref).max() <= 1, name


@pytest.mark.parametrize(
    "world, names, cfg_parallel",
    [(2, ["normal", "fast", "mask", "image"], False), (3, ["normal", "mask"], False),
     (4, ["normal", "fast", "image"], False), (4, ["normal", "mask"], True), (2, ["fast"], True)],
)  # fmt: skip
def test_sharded_render_equals_one_rank(one_rank, world, names, cfg_parallel):
    tmp, variants, reference = one_rank
    subset = {n: variants[n] for n in names}
    ranks = run_ranks(world, render_variants, subset, str(tmp / "o.png"), cfg_parallel)
    check_equal(reference, ranks, names)


@pytest.fixture(scope="module")
def one_rank_sd15(one_rank):
    tmp, variants, _ = one_rank
    return render_variants(ShardGroup.single(), variants, str(tmp / "o.png"), False, "tiny-sd15")


@pytest.mark.parametrize("world, names", [(2, ["normal", "fast"]), (3, ["mask"]), (4, ["normal", "image"])])
def test_sd15_sharded_render_equals_one_rank(one_rank, one_rank_sd15, world, names):
    """The SD1.5 topology (four levels, bands aligned to 8 latent rows) shards exactly like SDXL."""
    tmp, variants, _ = one_rank
    subset = {n: variants[n] for n in names}
    ranks = run_ranks(world, render_variants, subset, str(tmp / "o.png"), False, "tiny-sd15")
    check_equal(one_rank_sd15, ranks, names)


@pytest.mark.parametrize("quiet", [False, True])
def test_a_worker_rank_reports_progress_unless_quiet(tiny_model, tmp_path, capsys, quiet):
    """A Ray worker's rank 0 has no reporter of the driver's: it prints plain lines, which Ray forwards to
    the driver's log; the driver's --quiet reaches it."""
    from freescale.config.render_config import build_config

    config = build_config({"prompt": "a fox", "scale": 2, "steps": 2, "output": str(tmp_path / "o.png")}, 128)
    state = RankState(0, 1, ShardGroup.single(), tiny_model, tiny_model.device)
    render_on_rank(state, config, quiet=quiet)
    err = capsys.readouterr().err
    assert ("stage 2/2 step 2/2" in err) != quiet
