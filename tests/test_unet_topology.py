"""What FreeScale patches, chosen by module type and topology, on SDXL, SD1.5 and AnimateDiff motion UNets."""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_motion_model import MotionAdapter, UNetMotionModel

import freescale
from freescale.cluster.sharding.band_ops import BandConv2d, shard_unet
from freescale.cluster.sharding.local_ranks import max_relative_error, run_ranks
from freescale.cluster.sharding.shard_context import ShardContext
from freescale.method.scale_attention import ScaleFusionProcessor
from freescale.method.unet_topology import (
    UnsupportedUNetError,
    dilated_convs,
    freeu_channels,
    freeu_targets,
    spatial_self_attention,
)

SD15_WIDTHS = (32, 64, 128, 128)
CROSS = 32  # text width of the tiny SD1.5-topology UNets


def _sd15_unet(**changes) -> UNet2DConditionModel:
    """SD1.5's four-level topology at toy widths, random weights."""
    torch.manual_seed(0)
    config = dict(
        sample_size=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=SD15_WIDTHS,
        layers_per_block=2,
        attention_head_dim=2,
        norm_num_groups=8,
        cross_attention_dim=CROSS,
    )
    config.update(changes)
    return UNet2DConditionModel(**config).eval()


@pytest.fixture(scope="module")
def sd15_unet():
    return _sd15_unet()


@pytest.fixture(scope="module")
def motion_unet(sd15_unet):
    adapter = MotionAdapter(
        block_out_channels=SD15_WIDTHS,
        motion_layers_per_block=2,
        motion_num_attention_heads=2,
        motion_norm_num_groups=8,
        motion_max_seq_length=8,
    )
    torch.manual_seed(1)
    return UNetMotionModel.from_unet2d(sd15_unet, adapter).eval()


def _names(unet, modules) -> list[str]:
    names = {id(m): n for n, m in unet.named_modules()}
    return [names[id(m)] for m in modules]


SD15_DILATED = [
    "down_blocks.2.downsamplers.0.conv",
    "down_blocks.3.resnets.0.conv1",
    "down_blocks.3.resnets.0.conv2",
    "down_blocks.3.resnets.1.conv1",
    "down_blocks.3.resnets.1.conv2",
    "mid_block.resnets.0.conv1",
    "mid_block.resnets.0.conv2",
    "mid_block.resnets.1.conv1",
    "mid_block.resnets.1.conv2",
]
SDXL_DILATED = [  # SPEC section 5
    "down_blocks.1.downsamplers.0.conv",
    "down_blocks.2.resnets.0.conv1",
    "down_blocks.2.resnets.0.conv2",
    "down_blocks.2.resnets.1.conv1",
    "down_blocks.2.resnets.1.conv2",
    "mid_block.resnets.0.conv1",
    "mid_block.resnets.0.conv2",
    "mid_block.resnets.1.conv1",
    "mid_block.resnets.1.conv2",
]


def test_dilated_convs_on_the_sd15_topology(sd15_unet):
    found = dilated_convs(sd15_unet)
    assert [name for name, _ in found] == SD15_DILATED
    assert _names(sd15_unet, [conv for _, conv in found]) == SD15_DILATED


def test_dilated_convs_on_the_sdxl_topology(tiny_model):
    unet = tiny_model.pipe.unet
    found = dilated_convs(unet)
    assert [name for name, _ in found] == SDXL_DILATED
    # A UNet the renderer has sharded names its convs `<name>.inner`.
    assert [n.removesuffix(".inner") for n in _names(unet, [conv for _, conv in found])] == SDXL_DILATED


def test_dilated_convs_of_a_sharded_unet_are_the_wrapped_convs():
    unet = _sd15_unet()
    plain = [conv for _, conv in dilated_convs(unet)]
    shard_unet(unet, ShardContext())
    modules = dict(unet.named_modules())
    assert all(isinstance(modules[name], BandConv2d) for name in SD15_DILATED)
    found = dilated_convs(unet)
    assert [name for name, _ in found] == SD15_DILATED
    assert all(conv is before for (_, conv), before in zip(found, plain, strict=True))


def _freeu_found(unet) -> list[tuple[str, int, int]]:
    """(resnet name, hidden channels, pair: 0 takes (b1, s1), 1 takes (b2, s2)) of every FreeU target."""
    targets = freeu_targets(unet)
    names = _names(unet, [resnet for resnet, _, _ in targets])
    return [(name, hidden, pair) for name, (_, hidden, pair) in zip(names, targets, strict=True)]


def test_freeu_channels_on_the_sd15_topology(sd15_unet):
    # Up-block widths 128, 128, 64, 32: C_top 128, C_mid 64 (block_out_channels[-2] would be 128 again).
    assert freeu_channels(sd15_unet) == (128, 64)
    assert _freeu_found(sd15_unet) == [
        ("up_blocks.0.resnets.0", 128, 0),
        ("up_blocks.0.resnets.1", 128, 0),
        ("up_blocks.0.resnets.2", 128, 0),
        ("up_blocks.1.resnets.0", 128, 0),
        ("up_blocks.1.resnets.1", 128, 0),
        ("up_blocks.1.resnets.2", 128, 0),
        ("up_blocks.2.resnets.0", 128, 0),
        ("up_blocks.2.resnets.1", 64, 1),
        ("up_blocks.2.resnets.2", 64, 1),
        ("up_blocks.3.resnets.0", 64, 1),
    ]


def test_freeu_channels_on_the_sdxl_topology(tiny_model):
    # SDXL: up_blocks.0 (1280 in) -> (b1, s1); up_blocks.1.resnets.0 still sees 1280 -> (b1, s1);
    # its other resnets and up_blocks.2.resnets.0 see 640 -> (b2, s2). The tiny model: 128 and 64.
    unet = tiny_model.pipe.unet
    assert freeu_channels(unet) == (128, 64)
    assert _freeu_found(unet) == [
        ("up_blocks.0.resnets.0", 128, 0),
        ("up_blocks.0.resnets.1", 128, 0),
        ("up_blocks.0.resnets.2", 128, 0),
        ("up_blocks.1.resnets.0", 128, 0),
        ("up_blocks.1.resnets.1", 64, 1),
        ("up_blocks.1.resnets.2", 64, 1),
        ("up_blocks.2.resnets.0", 64, 1),
    ]


def test_a_unet_without_mid_block_is_an_error_naming_it():
    unet = _sd15_unet(mid_block_type=None)
    with pytest.raises(UnsupportedUNetError, match="UNet2DConditionModel .*no mid block"):
        dilated_convs(unet)
    with pytest.raises(UnsupportedUNetError, match="UNet2DConditionModel .*mid block"):
        freeu_targets(unet)


def test_down_blocks_without_a_down_sampler_are_an_error_naming_it():
    # One level: its only down block is the deepest and has no down-sampler. Its mid block's attention
    # is a plain Attention, not a Transformer2DModel's: nothing to put scale fusion on.
    unet = _sd15_unet(
        down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",),
        block_out_channels=(32,),
        mid_block_type="UNetMidBlock2D",
    )
    with pytest.raises(UnsupportedUNetError, match="UNet2DConditionModel .*no down block has a down-sampler"):
        dilated_convs(unet)
    with pytest.raises(UnsupportedUNetError, match="UNet2DConditionModel .*no Transformer2DModel self-att"):
        spatial_self_attention(unet)


def test_a_unet_without_down_blocks_is_an_error_naming_it():
    class Bare(torch.nn.Module):
        pass

    with pytest.raises(UnsupportedUNetError, match="Bare .*no down blocks"):
        dilated_convs(Bare())


def test_scale_fusion_goes_on_the_spatial_attention_of_a_motion_unet_only(motion_unet):
    spatial = [name for name, _ in spatial_self_attention(motion_unet)]
    every_attn1 = [name for name, _ in motion_unet.named_modules() if name.endswith(".attn1")]
    temporal = [name for name in every_attn1 if ".motion_modules." in name]
    assert temporal and spatial == [name for name in every_attn1 if name not in temporal]
    assert all(".attentions." in name for name in spatial)
    # The spatial layers and their order are those of the image UNet the motion UNet was built from.
    sd15 = [name for name, _ in spatial_self_attention(_sd15_unet())]
    assert spatial == sd15
    assert [name for name, _ in dilated_convs(motion_unet)] == SD15_DILATED


def _state(unet):
    """Everything scale_fusion touches: attention processors, conv settings, hooks and patched forwards."""
    return (
        [(name, m.processor) for name, m in unet.named_modules() if hasattr(m, "processor")],
        [(name, m.dilation, m.padding) for name, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d)],
        [
            (name, len(m._forward_pre_hooks), len(m._forward_hooks), "forward" in m.__dict__)
            for name, m in unet.named_modules()
        ],
    )


def _fused_call_restores(unet, sample, text, native: int, target: tuple[int, int]) -> None:
    """One scale-fusion call changes the output, with scale fusion on the spatial attn1 layers and on no
    other attention; after the block the UNet is exactly as before."""
    with torch.no_grad():
        before_out = unet(sample, 500, encoder_hidden_states=text).sample
        before_state = _state(unet)
        with freescale.scale_fusion(unet, native_size=native, target_size=target, jitter_seed=2) as handle:
            handle.begin_step(stage=1, step=0, dilate=True)
            spatial = {id(m) for _, m in spatial_self_attention(unet)}
            for module in unet.modules():
                if hasattr(module, "processor"):
                    assert isinstance(module.processor, ScaleFusionProcessor) == (id(module) in spatial)
            inside = unet(sample, 500, encoder_hidden_states=text).sample
        after_out = unet(sample, 500, encoder_hidden_states=text).sample
    assert inside.shape == before_out.shape and torch.isfinite(inside).all()
    assert not torch.equal(inside, before_out)
    assert torch.equal(after_out, before_out)
    assert _state(unet) == before_state


def test_scale_fusion_runs_on_a_motion_unet_and_restores_it_exactly(motion_unet):
    # Native 64 px (8 latent rows); a 2x latent of 2 frames. The spatial layers see frames as batch,
    # so the text is given per frame as a motion pipeline does.
    unet = copy.deepcopy(motion_unet)
    torch.manual_seed(3)
    frames = 2
    sample = torch.randn(1, 4, frames, 16, 16)
    text = torch.randn(frames, 77, CROSS)
    _fused_call_restores(unet, sample, text, native=64, target=(128, 128))


def test_scale_fusion_runs_on_an_sd15_unet_and_restores_it_exactly():
    unet = _sd15_unet()
    torch.manual_seed(4)
    sample = torch.randn(2, 4, 16, 24)
    text = torch.randn(2, 77, CROSS)
    _fused_call_restores(unet, sample, text, native=64, target=(128, 192))


SHARDED_LATENT = (24, 16)  # three 8-row units (SD1.5 has 3 down-samplers): 2 ranks hold 16 and 8 rows


def _fused_sd15_call(shard_group=None) -> torch.Tensor:
    """One dilated scale-fusion call of the SD1.5-topology UNet; on a group, this rank's rows of it."""
    unet = _sd15_unet()
    torch.manual_seed(5)
    sample = torch.randn(2, 4, *SHARDED_LATENT)
    text = torch.randn(2, 77, CROSS)
    context = None
    if shard_group is not None:
        context = ShardContext(group=shard_group)
        shard_unet(unet, context)
        context.set_stage(SHARDED_LATENT)
        a, b = context.band
        sample = sample[:, :, a:b]
    target = (SHARDED_LATENT[0] * 8, SHARDED_LATENT[1] * 8)
    with torch.no_grad(), freescale.scale_fusion(unet, 64, target, jitter_seed=7, shard=context) as handle:
        handle.begin_step(stage=1, step=0, dilate=True)
        return unet(sample, 500, encoder_hidden_states=text).sample


def test_sharded_sd15_unet_with_scale_fusion_equals_one_rank():
    # Dilation on the SD1.5 topology's convs through the band operators' wrappers, FreeU and scale fusion.
    expected = _fused_sd15_call()
    bands = [(0, 16), (16, 24)]
    for (a, b), got in zip(bands, run_ranks(2, _fused_sd15_call), strict=True):
        assert got.shape == expected[:, :, a:b].shape
        assert max_relative_error(got, expected[:, :, a:b]) < 1e-5
