"""The cost model against what it models: FLOPs against torch's FlopCounterMode on the tiny UNet (whole
and sharded), bytes against the CommStats of real gloo ranks, the calibration against its measurements."""

import inspect
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from freescale.cluster.sharding.band_alone import BandAloneGroup
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.config.render_config import FREEU_DEFAULT
from freescale.errors import ConfigError
from freescale.planning.cost_calibration import builtin_profile, device_calibration, link_for
from freescale.planning.cost_model import Jitter, unet_call_cost
from freescale.planning.memory_model import attention_working_set
from freescale.planning.unet_profile import SHAPE_FIELDS, architecture_key
from freescale.planning.vae_cost import output_work, transition_work
from freescale.tiling.bands import row_bands

TINY_NATIVE = 128


@pytest.fixture(scope="module")
def meta_unet():
    from freescale.models.tiny_sdxl import build_tiny_pipeline
    from freescale.planning.unet_profile import build_meta_unet

    config = dict(build_tiny_pipeline().unet.config)
    return build_meta_unet(config), config


@pytest.fixture(scope="module")
def tiny_profile():
    return builtin_profile("tiny")


def _kwargs(unet, batch):
    from freescale.models.sdxl_unet import random_unet_kwargs

    return random_unet_kwargs(unet, batch, (TINY_NATIVE, TINY_NATIVE))


def test_stored_profile_is_this_architecture(meta_unet, tiny_profile):
    # Its FLOPs are checked against FlopCounterMode and its sharded operators against CommStats below.
    unet, config = meta_unet
    assert tiny_profile.key == architecture_key(config)
    assert tiny_profile.parameters == sum(p.numel() for p in unet.parameters())


def test_shape_field_defaults_are_diffusers_defaults():
    from diffusers import UNet2DConditionModel

    signature = inspect.signature(UNet2DConditionModel.__init__).parameters
    for name, default in SHAPE_FIELDS.items():
        expected = signature[name].default
        assert default == (list(expected) if isinstance(expected, tuple) else expected), name


@pytest.mark.parametrize("size,mode", [(256, "direct"), (512, "freescale"), (384, "fast")])
def test_whole_latent_flops_match_flop_counter(meta_unet, tiny_profile, size, mode):
    from freescale.method.scale_fusion import scale_fusion

    unet, _ = meta_unet
    latent = size // 8
    x = torch.zeros(2, 4, latent, latent, device="meta", dtype=unet.dtype)
    kwargs = _kwargs(unet, 2)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        if mode == "direct":
            unet(x, 500, **kwargs, return_dict=False)
        else:
            fast = mode == "fast"
            fusion = scale_fusion(
                unet, TINY_NATIVE, (size, size), fast_mode=fast, freeu=FREEU_DEFAULT, jitter_seed=0
            )
            with fusion as handle:
                handle.begin_step(1, 10, dilate=True)
                unet(x, 500, **kwargs, return_dict=False)
    counts = (size // TINY_NATIVE,) * 2
    cost = unet_call_cost(tiny_profile, (latent, latent), [(0, latent)], 0, batch=2, mode=mode, counts=counts,
                          freeu=mode != "direct", jitter=Jitter(0, 1, 10))  # fmt: skip
    assert cost.flops == pytest.approx(counter.get_total_flops(), rel=1e-12)


def test_rank_flops_match_flop_counter(tiny_profile, world=3, fast_mode=False, height=640):
    """Each rank's band, with the rows it borrows and the windows it shares with its neighbours: 3 ranks
    of 28, 28 and 24 rows of an 80 x 64 latent (n = 5 x 4)."""
    from freescale.cluster.sharding.band_ops import shard_context_of
    from freescale.method.freeu import freeu_applied
    from freescale.method.scale_fusion import scale_fusion
    from freescale.models.tiny_sdxl import build_tiny_pipeline
    from freescale.planning.unet_profile import build_meta_unet

    unet = build_meta_unet(dict(build_tiny_pipeline().unet.config))
    size, latent = (height, 512), (height // 8, 64)
    shard = shard_context_of(unet)
    kwargs = _kwargs(unet, 2)
    for rank in range(world):
        shard.group = BandAloneGroup(rank=rank, world=world)  # the band_compute bench's stand-in
        shard.set_stage(latent)
        a, b = shard.band
        x = torch.zeros(2, 4, b - a, latent[1], device="meta", dtype=unet.dtype)
        fusion = scale_fusion(
            unet, TINY_NATIVE, size, fast_mode=fast_mode, freeu=None, jitter_seed=5, shard=shard
        )
        with torch.inference_mode(), freeu_applied(unet, FREEU_DEFAULT, shard), fusion as handle:
            handle.begin_step(2, 3, dilate=True)
            with FlopCounterMode(display=False) as counter:
                unet(x, 500, **kwargs, return_dict=False)
        counts = (height // TINY_NATIVE, 512 // TINY_NATIVE)
        cost = unet_call_cost(tiny_profile, latent, shard.bands, rank, batch=2, mode="fast" if fast_mode else
                              "freescale", counts=counts, jitter=Jitter(5, 2, 3))  # fmt: skip
        assert cost.flops == pytest.approx(counter.get_total_flops(), rel=1e-12), rank


def _one_step(unet, group, size: int) -> tuple[dict, dict]:
    """One CFG-batched FreeScale step of the tiny UNet on this rank's band (the cascade's setup)."""
    from freescale.cluster.sharding.band_ops import shard_context_of
    from freescale.method.freeu import freeu_applied
    from freescale.method.scale_fusion import scale_fusion
    from freescale.models.sdxl_unet import random_unet_kwargs

    shard = shard_context_of(unet)
    shard.group = group
    shard.set_stage((size // 8, size // 8))
    a, b = shard.band
    sample = torch.randn(2, 4, b - a, size // 8)
    kwargs = random_unet_kwargs(unet, 2, (TINY_NATIVE, TINY_NATIVE))
    fusion = scale_fusion(unet, TINY_NATIVE, (size, size), freeu=None, jitter_seed=0, shard=shard)
    with torch.inference_mode(), freeu_applied(unet, FREEU_DEFAULT, shard), fusion as handle:
        handle.begin_step(1, 1, dilate=True)
        unet(sample, 500, **kwargs)
    return dict(group.stats.bytes_sent), dict(group.stats.calls)


def test_subgrid_pairs_count_every_query_key_pair():
    from freescale.planning.fusion_flops import subgrid_pairs

    grid, counts = (23, 10), (3, 4)
    for band in [(0, 23), (0, 8), (8, 16), (16, 23), (5, 6), (7, 7)]:
        expected = 0
        for r in range(*band):
            for c in range(grid[1]):  # a query attends every token of its own sub-grid
                same_rows = len(range(r % counts[0], grid[0], counts[0]))
                expected += same_rows * len(range(c % counts[1], grid[1], counts[1]))
        assert subgrid_pairs(grid, band, counts) == expected, band


def traffic_on_rank(group, size: int) -> list[tuple[dict, dict]]:
    """The step on all 4 ranks, then on the pairs (0, 1) and (2, 3): both sizes from one start-up."""
    import torch.distributed as dist

    from freescale.models.tiny_sdxl import build_tiny_pipeline

    unet = build_tiny_pipeline().unet
    pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    half = group.rank // 2
    pair = ShardGroup(rank=group.rank % 2, world=2, group=pairs[half], ranks=(2 * half, 2 * half + 1))
    return [_one_step(unet, g, size) for g in (group, pair)]


def test_bytes_match_comm_stats(tiny_profile):
    from freescale.cluster.sharding.local_ranks import run_ranks

    size = 256  # 32 latent rows: 8 per rank of 4 (2 at the /4 level, where the dilated convs reach 2)
    latent = (size // 8, size // 8)
    results = run_ranks(4, traffic_on_rank, size)
    for world, index in ((4, 0), (2, 1)):
        bands = row_bands(latent[0], world, tiny_profile.align)
        for rank, measured in enumerate(r[index] for r in results[:world]):
            cost = unet_call_cost(tiny_profile, latent, bands, rank, batch=2, mode="freescale", counts=(2, 2),
                                  dtype_bytes=4, jitter=Jitter(0, 1, 1))  # fmt: skip
            assert {k: v for k, v in cost.bytes_sent.items() if v} == measured[0], (world, rank)
            assert {k: v for k, v in cost.calls.items() if v} == measured[1], (world, rank)
    assert [r[1] for r in results[2:]] == [r[1] for r in results[:2]]  # the other pair, the same bands


def test_exchange_table_is_every_rank_s_fetch():
    from freescale.planning.shard_traffic import conv_needs, exchange_table
    from freescale.tiling.bands import overlap

    for rows, world in [(64, 4), (1024, 256), (32, 16), (400, 7), (8, 4)]:
        bands = row_bands(rows, world, 4)
        for stride, padding, dilation in [(1, 1, 1), (2, 1, 1), (1, 8, 8), (1, 5, 5)]:
            needs = conv_needs(bands, rows, stride, padding, dilation, 3)
            sent, active = exchange_table(bands, needs)
            for rank, band in enumerate(bands):  # ShardGroup.fetch_rows, rank by rank
                sends = [overlap(band, need) for other, need in enumerate(needs) if other != rank]
                receives = [overlap(b, needs[rank]) for other, b in enumerate(bands) if other != rank]
                assert sent[rank] == sum(p[1] - p[0] for p in sends if p)
                assert active[rank] == any(sends + receives)


def test_undilated_steps_send_less(tiny_profile):
    bands = row_bands(64, 4, 4)
    dilated, plain = (
        unet_call_cost(tiny_profile, (64, 64), bands, 1, batch=2, mode="freescale", counts=(4, 4), dilate=d)
        for d in (True, False)
    )
    assert plain.bytes_sent["halo"] < dilated.bytes_sent["halo"]
    assert plain.flops == dilated.flops


def test_gathered_keys_values_formula():
    sdxl = builtin_profile("sdxl")
    latent, batch, world = (1024, 1024), 2, 8
    bands = row_bands(latent[0], world, sdxl.align)
    kv, borrowed = attention_working_set(sdxl, latent, bands, 3, batch, 8, 2)
    # The largest layer is at the /2 level: 512 x 512 tokens of width 640; 8 equal bands of 64 rows are
    # received in place in the assembled 512 rows.
    assert kv == 512 * 2 * batch * 512 * 640 * 2
    assert borrowed > 0
    # Unequal bands (320 and 192 rows at /2): the gather holds 2 bands padded to 320, then the 512 rows.
    kv, _ = attention_working_set(sdxl, latent, [(0, 640), (640, 1024)], 1, batch, 8, 2)
    assert kv == (2 * 320 + 512) * 2 * batch * 512 * 640 * 2
    assert attention_working_set(sdxl, latent, [(0, 1024)], 0, batch, 8, 2) == (0, 0)


SDXL_8K = [(1024, 1024), (2048, 2048), (4096, 4096), (8192, 8192)]


def test_memory_per_worker_falls_with_workers():
    from freescale.planning.plan import make_plan

    peaks = [make_plan(SDXL_8K, w, model="sdxl").peak_bytes for w in (1, 2, 4, 8, 16)]
    assert all(later < earlier for earlier, later in zip(peaks, peaks[1:], strict=False))


def test_calibration_reproduces_its_measurements_and_the_held_out_ones():
    for name, tolerance in (("NVIDIA H200", 0.06), ("cpu", 0.12)):
        calibration = device_calibration(name)
        assert calibration.fit and (calibration.holdout or name == "cpu")
        for point in calibration.fit + calibration.holdout:
            assert point["predicted_s"] == pytest.approx(point["measured_s"], rel=tolerance), (name, point)
            if "measured_peak_gib" in point:
                assert point["predicted_peak_gib"] == pytest.approx(point["measured_peak_gib"], rel=0.02)


def test_h200_single_worker_plan_matches_the_measured_steps():
    from freescale.planning.plan import make_plan

    calibration = device_calibration("NVIDIA H200")
    measured = {p["size"]: p for p in calibration.fit + calibration.holdout if p["mode"] == "freescale"}
    stages = [(1024, 1024)] + [(size, size) for size in sorted(measured) if size > 1024]
    plan = make_plan(stages, 1, model="sdxl", device=calibration, steps=50, restart=0.0, dilate_tau=50)
    for stage in plan.stages[1:]:
        point = measured[stage.size[0]]
        assert stage.step_s == pytest.approx(point["measured_s"], rel=0.06)
        # the activation estimate plus the UNet's weights (all the bench held) is the measured peak
        rank = stage.per_rank[0]
        unet_weights = plan.model.unet.parameters * 2
        peak = (rank.memory["activations"] + unet_weights) / 2**30
        assert peak == pytest.approx(point["measured_peak_gib"], rel=0.02)


def test_plan_8192_on_8_workers():
    import time

    from freescale.planning.plan import make_plan
    from freescale.planning.plan_format import format_plan, plan_json

    started = time.perf_counter()
    plans = {link: make_plan(SDXL_8K, 8, model="sdxl", link=link) for link in ("nvlink", "pcie", "ethernet")}
    assert time.perf_counter() - started < 5
    plan = plans["nvlink"]
    last = plan.stages[-1]
    assert [s.mode for s in plan.stages] == ["direct", "freescale", "freescale", "freescale"]
    assert [r.band for r in last.per_rank] == [(128 * i, 128 * (i + 1)) for i in range(8)]
    assert last.steps == 35 and last.dilated_steps == 20
    # Each rank does about an eighth of the stage's work, plus its share of the window and blur halos.
    whole = make_plan(SDXL_8K, 1, model="sdxl").stages[-1].per_rank[0].tflops_per_step
    assert whole / 8 < max(r.tflops_per_step for r in last.per_rank) < whole / 8 * 1.1
    totals = [plans[k].total_s for k in ("nvlink", "pcie", "ethernet")]
    assert totals == sorted(totals) and totals[0] < totals[2]
    text = format_plan(plan)
    assert "8192x8192" in text and "peak memory per worker" in text and "all_gather" in text
    data = json.loads(plan_json(plan))
    assert data["workers"] == 8 and len(data["stages"]) == 4 and len(data["stages"][3]["per_rank"]) == 8
    assert data["peak_bytes_per_worker"] == int(plan.peak_bytes)


def test_cfg_parallel_halves_the_groups():
    from freescale.planning.plan import make_plan

    plan = make_plan(SDXL_8K, 8, model="sdxl", cfg_parallel=True)
    last = plan.stages[-1]
    assert last.ranks == 4 and last.batch == 1 and last.per_rank[0].bytes_per_step["cfg_swap"] > 0
    with pytest.raises(ConfigError, match="even"):
        make_plan(SDXL_8K, 3, model="sdxl", cfg_parallel=True)


def test_preflight_refuses_with_the_smallest_worker_count():
    from freescale.planning.plan import make_plan
    from freescale.planning.preflight import preflight

    memory = 24 * 2**30
    plan = make_plan(SDXL_8K, 1, model="sdxl")
    with pytest.raises(ConfigError) as info:
        preflight(plan, memory)
    message = str(info.value)
    assert "stage 3 (8192x8192" in message and "24.0 GiB" in message and "--workers " in message
    workers = int(message.split("--workers ")[1].split()[0])
    assert make_plan(SDXL_8K, workers, model="sdxl").peak_bytes <= memory
    assert make_plan(SDXL_8K, workers - 1, model="sdxl").peak_bytes > memory
    preflight(make_plan(SDXL_8K, 8, model="sdxl"), 141 * 2**30)  # an H200 holds an eighth
    with pytest.raises(ConfigError, match="weights alone"):
        preflight(plan, 4 * 2**30)


def test_vae_work_of_the_whole_latent_is_every_tile():
    # 2048 -> 4096 for SDXL: the encoder has 6 x 6 tiles (starts every 768 px, the last 256 px tall),
    # the decoder 3 x 3 (starts every 96 latent rows, the last 64 tall).
    work = transition_work((2048, 2048), (4096, 4096), (0, 512), 1024, 8)
    assert work.encode_pixels == (5 * 1024 + 256) ** 2
    assert work.decode_latent_pixels == (2 * 128 + 64) ** 2
    top = transition_work((2048, 2048), (4096, 4096), (0, 128), 1024, 8)
    assert top.encode_pixels < work.encode_pixels and top.decode_latent_pixels < work.decode_latent_pixels
    assert output_work((2048, 2048), (0, 2048), 1024, 8).decode_latent_pixels == (2 * 128 + 64) ** 2


def test_model_spec_reads_a_directory_and_a_single_file(tmp_path):
    from freescale.models.loading import save_tiny_model
    from freescale.planning.model_spec import model_spec

    save_tiny_model(str(tmp_path), single_file=True)
    builtin = model_spec("tiny")
    for spec in (model_spec(str(tmp_path)), model_spec(str(tmp_path / "tiny_sdxl.safetensors"))):
        assert spec.unet == builtin.unet and spec.native_size == 128
        assert (spec.text_parameters, spec.vae_parameters) == (
            builtin.text_parameters,
            builtin.vae_parameters,
        )


def test_plan_of_a_render_config():
    from freescale.config.render_config import build_config
    from freescale.planning.plan import plan_for_config
    from freescale.planning.plan_format import format_plan

    config = build_config({"prompt": "a fox", "scale": 4, "steps": 20, "save_stages": True}, native_size=128)
    plan = plan_for_config(config, 4, device="cpu", link="loopback")
    assert [s.size for s in plan.stages] == [(128, 128), (256, 256), (512, 512)]
    assert plan.request.dtype_bytes == 4 and plan.request.output_stages == (0, 1, 2)
    assert plan.stages[2].steps == 20 - 6 and plan.stages[2].ranks == 4
    assert "512x512 with tiny" in format_plan(plan)


def test_links_and_unknown_devices():
    assert link_for("pcie", gbps=50).gbps == 50 and link_for("nvlink").gbps > link_for("ethernet").gbps
    with pytest.raises(ConfigError, match="--link"):
        link_for("carrier-pigeon")
    assert device_calibration("NVIDIA H100 80GB HBM3").name == "NVIDIA H200"
    with pytest.raises(ConfigError, match="calibrat"):
        device_calibration("AMD Instinct MI300X")
    from freescale.planning.plan import make_plan

    plan = make_plan([(1024, 1024), (2048, 2048)], 2, model="sdxl", device="AMD Instinct MI300X")
    assert plan.device.name == "NVIDIA H200" and "no calibration measured on AMD" in plan.notes[0]


def test_plan_uses_the_measured_bands_where_it_has_them():
    """bench/band_compute.py's measurements (in the calibration) replace the model's compute for the bands
    they match, and only those: the CPU's stored ones for the tiny model at 1024^2, then one made up."""
    import dataclasses

    from freescale.planning.plan import make_plan
    from freescale.planning.plan_format import format_plan, plan_json

    cpu = device_calibration("cpu")
    stored = {(m["world"], m["rank"]): m["measured_s"] for m in cpu.band_steps}
    assert {(4, rank) for rank in range(4)} <= stored.keys()
    plan = make_plan([(128, 128), (1024, 1024)], 4, model="tiny", device=cpu)
    last = plan.stages[-1]
    assert [r.compute_s_per_step for r in last.per_rank] == [stored[(4, rank)] for rank in range(4)]
    assert all(r.compute_measured for r in last.per_rank) and not plan.stages[0].per_rank[0].compute_measured
    assert "stage 1: compute of every band measured on cpu" in format_plan(plan)
    assert json.loads(plan_json(plan))["stages"][1]["per_rank"][0]["compute_measured"] is True

    # One band measured of three: that rank's time is the measurement, the others' the model's.
    stages = [(128, 128), (768, 768)]
    modelled = make_plan(stages, 3, model="tiny", device=dataclasses.replace(cpu, band_steps=()))
    rank = modelled.stages[-1].per_rank[1]
    one = {"profile_key": modelled.model.unet.key, "latent": [96, 96], "world": 3, "rank": 1,
           "band": list(rank.band), "mode": "freescale", "batch": 2, "dtype_bytes": 4, "freeu": True,
           "measured_s": 123.0}  # fmt: skip
    with_one = dataclasses.replace(cpu, band_steps=(one,))
    plan = make_plan(stages, 3, model="tiny", device=with_one)
    ranks = plan.stages[-1].per_rank
    assert [r.compute_measured for r in ranks] == [False, True, False]
    assert "stage 1: compute of 1 of 3 bands measured on cpu (bench/band_compute.py), the" in format_plan(
        plan
    )
    assert ranks[1].compute_s_per_step == 123.0
    assert ranks[0].compute_s_per_step == modelled.stages[-1].per_rank[0].compute_s_per_step
    # Another mode, dtype, split or FreeU setting is not that measurement.
    for other in ({"fast_mode": True}, {"dtype_bytes": 2}, {"workers": 2}, {"freeu": False}):
        plan = make_plan(stages, **{"workers": 3, **other}, model="tiny", device=with_one)
        assert not any(r.compute_measured for r in plan.stages[-1].per_rank), other
