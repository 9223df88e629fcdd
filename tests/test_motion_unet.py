"""FreeScale on AnimateDiff motion UNets: frame by frame the image step, exact on 2-4 ranks, and the tiny
motion adapters (built-in, saved and loaded back, pickles refused, make-test-model --motion)."""

import copy

import pytest
import torch

import freescale
from freescale.cli.commands import main
from freescale.cluster.sharding.band_ops import shard_unet
from freescale.cluster.sharding.local_ranks import max_relative_error, run_ranks
from freescale.cluster.sharding.shard_context import ShardContext
from freescale.errors import ConfigError
from freescale.method.scale_attention import ScaleFusionProcessor
from freescale.models.loading import load_model, resolve_model_source
from freescale.models.motion_adapter import (
    MOTION_ADAPTER_DIR,
    TINY_MAX_FRAMES,
    build_tiny_motion_adapter,
    load_motion_adapter,
    motion_unet,
    save_motion_adapter_file,
    save_tiny_motion_adapter,
)

NATIVE = 128  # the tiny models' native size: a 16x16 latent
LATENT = (32, 32)  # 2x native
FRAMES = 2
TARGET = (LATENT[0] * 8, LATENT[1] * 8)
MODELS = {"sd15": "tiny-sd15", "sdxl": "tiny"}


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)  # the ranks of run_ranks keep their own one thread each


def _loaded(family: str):
    return load_model(resolve_model_source(MODELS[family]), device="cpu")


def _inputs(family: str, model) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """sample (1, 4, F, h, w), text per frame (F, L, D) as diffusers' AnimateDiff pipelines pass it, and
    SDXL's pooled text and micro-conditioning (given once per clip)."""
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 4, FRAMES, *LATENT, generator=generator)
    width = model.pipe.unet.config.cross_attention_dim
    text = torch.randn(FRAMES, 77, width, generator=generator)
    added = {}
    if family == "sdxl":
        pooled = torch.randn(1, model.pipe.text_encoder_2.config.projection_dim, generator=generator)
        added = {"text_embeds": pooled, "time_ids": torch.tensor([[*TARGET, 0.0, 0.0, *TARGET]])}
    return sample, text, added


def _call(unet, sample, text, added, shard=None):
    kwargs = {"added_cond_kwargs": added} if added else {}
    with freescale.scale_fusion(unet, NATIVE, TARGET, jitter_seed=11, shard=shard) as handle:
        handle.begin_step(stage=1, step=2, dilate=True)
        return unet(sample, 500, encoder_hidden_states=text, **kwargs).sample


def _zero_motion(unet) -> None:
    """Every motion module then adds exactly nothing to its input (its output is proj_out(...) + input)."""
    zeroed = 0
    for name, module in unet.named_modules():
        if name.endswith("proj_out") and ".motion_modules." in name:
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
            zeroed += 1
    assert zeroed > 0


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_motion_unet_without_motion_is_the_image_step_frame_by_frame(family):
    model = _loaded(family)
    unet = motion_unet(model, build_tiny_motion_adapter(family))
    sample, text, added = _inputs(family, model)
    with torch.no_grad():
        moving = _call(unet, sample, text, added)
        still_unet = copy.deepcopy(unet)
        _zero_motion(still_unet)
        still = _call(still_unet, sample, text, added)
        frames = [
            _call(model.pipe.unet, sample[:, :, f], text[f : f + 1], added).unsqueeze(2)
            for f in range(FRAMES)
        ]
    expected = torch.cat(frames, dim=2)
    assert still.shape == sample.shape
    assert max_relative_error(still, expected) <= 1e-5
    # The motion modules do act (so the identity above is not vacuous), and differently per frame.
    assert max_relative_error(moving, still) > 1e-3


def test_motion_modules_keep_their_processors_and_the_unet_is_restored():
    model = _loaded("sd15")
    unet = motion_unet(model, build_tiny_motion_adapter("sd15"))
    sample, text, _ = _inputs("sd15", model)
    processors = {name: m.processor for name, m in unet.named_modules() if hasattr(m, "processor")}
    hooks = {name: (len(m._forward_pre_hooks), len(m._forward_hooks)) for name, m in unet.named_modules()}
    convs = {n: (m.dilation, m.padding) for n, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d)}
    seen = {}

    def spy(module, args, kwargs):
        seen.update({n: m.processor for n, m in unet.named_modules() if hasattr(m, "processor")})

    handle = unet.register_forward_pre_hook(spy, with_kwargs=True)
    with torch.no_grad():
        _call(unet, sample, text, {})
    handle.remove()
    temporal = [name for name in processors if ".motion_modules." in name]
    assert temporal and all(seen[name] is processors[name] for name in temporal)
    spatial = [name for name in processors if ".attentions." in name and name.endswith("attn1")]
    assert spatial and all(isinstance(seen[name], ScaleFusionProcessor) for name in spatial)
    assert {name: m.processor for name, m in unet.named_modules() if hasattr(m, "processor")} == processors
    assert {
        name: (len(m._forward_pre_hooks), len(m._forward_hooks)) for name, m in unet.named_modules()
    } == hooks
    assert {
        n: (m.dilation, m.padding) for n, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d)
    } == convs


def sharded_motion_call(shard_group=None) -> torch.Tensor:
    """One dilated scale-fusion call of the tiny SD1.5 motion UNet; on a group, this rank's rows of every
    frame (module level: run_ranks imports it by name)."""
    model = _loaded("sd15")
    unet = motion_unet(model, build_tiny_motion_adapter("sd15"))
    sample, text, _ = _inputs("sd15", model)
    context = None
    if shard_group is not None:
        context = ShardContext(group=shard_group)
        shard_unet(unet, context)
        context.set_stage(LATENT)
        a, b = context.band
        sample = sample[..., a:b, :]
    with torch.no_grad():
        return _call(unet, sample, text, {}, shard=context)


@pytest.fixture(scope="module")
def one_rank_motion_call():
    return sharded_motion_call()


@pytest.mark.parametrize("world", [2, 3, 4])
def test_sharded_motion_unet_call_equals_one_rank(world, one_rank_motion_call):
    # The motion modules' GroupNorm (on (B, C, F, rows, w)) sums over frames and every rank's rows; the
    # temporal attention and feed-forward act per position.
    expected = one_rank_motion_call
    got = run_ranks(world, sharded_motion_call)
    assembled = torch.cat(got, dim=-2)
    assert assembled.shape == expected.shape
    assert float((assembled - expected).abs().max()) <= 1e-4
    assert max_relative_error(assembled, expected) < 1e-5


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_builtin_adapter_loads_for_its_family(family):
    adapter = load_motion_adapter("tiny", family)
    assert adapter.config.motion_max_seq_length == TINY_MAX_FRAMES
    assert _same_weights(adapter, build_tiny_motion_adapter(family, seed=0))
    assert not _same_weights(adapter, build_tiny_motion_adapter(family, seed=1))


def test_an_adapter_for_a_family_without_one_is_an_error():
    with pytest.raises(ConfigError, match="'sd21' has no built-in tiny motion adapter"):
        load_motion_adapter("tiny", "sd21")


def test_a_saved_adapter_loads_back_bit_identical(tmp_path):
    adapter = build_tiny_motion_adapter("sd15", seed=4)
    save_tiny_motion_adapter(str(tmp_path / "dir"), "sd15", seed=4)
    assert _same_weights(load_motion_adapter(str(tmp_path / "dir"), "sd15"), adapter)
    save_motion_adapter_file(adapter, str(tmp_path / "adapter.safetensors"))
    from_file = load_motion_adapter(str(tmp_path / "adapter.safetensors"), "sd15")
    assert _same_weights(from_file, adapter)
    assert tuple(from_file.config.block_out_channels) == tuple(adapter.config.block_out_channels)
    assert from_file.config.motion_num_attention_heads == adapter.config.motion_num_attention_heads


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt"])
def test_pickled_adapters_are_refused_without_allow_pickle(tmp_path, suffix):
    adapter = build_tiny_motion_adapter("sd15")
    path = tmp_path / f"mm_sd_v15{suffix}"
    torch.save(adapter.state_dict(), path)
    with pytest.raises(ConfigError, match=f"motion adapter {path} is a pickle.*--allow-pickle"):
        load_motion_adapter(str(path), "sd15")


def test_a_pickled_adapter_loads_with_allow_pickle(tmp_path):
    adapter = build_tiny_motion_adapter("sdxl")
    path = tmp_path / "adapter.ckpt"
    torch.save({"state_dict": adapter.state_dict()}, path)
    # A bare state dict is read with AnimateDiff's 8 heads and 32 norm groups; the weights are the same.
    assert _same_weights(load_motion_adapter(str(path), "sdxl", allow_pickle=True), adapter)


def test_a_directory_without_safetensors_weights_is_refused(tmp_path):
    build_tiny_motion_adapter("sd15").save_pretrained(str(tmp_path), safe_serialization=False)
    with pytest.raises(ConfigError, match="no diffusion_pytorch_model.safetensors.*--allow-pickle"):
        load_motion_adapter(str(tmp_path), "sd15")
    assert _same_weights(
        load_motion_adapter(str(tmp_path), "sd15", allow_pickle=True), load_motion_adapter("tiny", "sd15")
    )


def test_other_values_are_an_error_naming_them(tmp_path):
    with pytest.raises(ConfigError, match="'clip.mp4' is not 'tiny', a MotionAdapter directory"):
        load_motion_adapter("clip.mp4", "sd15")
    with pytest.raises(ConfigError, match="does not exist"):
        load_motion_adapter(str(tmp_path / "missing.safetensors"), "sd15")
    with pytest.raises(ConfigError, match="has no config.json"):
        load_motion_adapter(str(tmp_path), "sd15")


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_make_test_model_motion_writes_a_loadable_adapter(tmp_path, family):
    directory = tmp_path / "model"
    assert main(["make-test-model", str(directory), "--family", family, "--motion"]) == 0
    adapter_dir = directory / MOTION_ADAPTER_DIR
    assert (adapter_dir / "diffusion_pytorch_model.safetensors").is_file()
    assert _same_weights(load_motion_adapter(str(adapter_dir), family), load_motion_adapter("tiny", family))
    # The adapter's folder leaves the model directory loadable as before.
    assert load_model(resolve_model_source(str(directory)), device="cpu").family.name == family
