"""`scale_fusion` on a real diffusers SDXL-topology UNet: what it switches, and that it restores exactly."""

import pytest
import torch

from freescale.method.dilation import DILATED_CONVS
from freescale.method.freeu import freeu_targets
from freescale.method.scale_attention import ScaleFusionProcessor
from freescale.method.scale_fusion import scale_fusion, self_attention_modules


def _unet_inputs(pipe, size=64):
    torch.manual_seed(0)
    cross = pipe.unet.config.cross_attention_dim
    return dict(
        sample=torch.randn(2, 4, size, size),
        timestep=torch.tensor(500),
        encoder_hidden_states=torch.randn(2, 77, cross),
        added_cond_kwargs={
            "text_embeds": torch.randn(2, 32),
            "time_ids": torch.tensor([[128, 128, 0, 0, 128, 128]] * 2),
        },
    )


def _state(unet):
    return (
        [(name, m.processor) for name, m in self_attention_modules(unet)],
        [(name, m.dilation, m.padding) for name, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d)],
        [
            (name, len(m._forward_pre_hooks), len(m._forward_hooks), "forward" in m.__dict__)
            for name, m in unet.named_modules()
        ],
    )


def test_context_restores_the_unet_exactly(tiny_model):
    unet = tiny_model.pipe.unet
    inputs = _unet_inputs(tiny_model.pipe)
    with torch.no_grad():
        before_out = unet(**inputs).sample
        before_state = _state(unet)
        with scale_fusion(unet, native_size=(128, 128), target_size=(512, 512), jitter_seed=3) as handle:
            handle.begin_step(stage=1, step=0, dilate=True)
            inside = unet(**inputs).sample
            assert all(isinstance(m.processor, ScaleFusionProcessor) for _, m in self_attention_modules(unet))
        after_out = unet(**inputs).sample
    assert not torch.equal(inside, before_out)
    assert torch.equal(after_out, before_out)
    assert _state(unet) == before_state


def test_context_restores_after_an_error(tiny_model):
    unet = tiny_model.pipe.unet
    before_state = _state(unet)
    with pytest.raises(RuntimeError, match="boom"):
        with scale_fusion(unet, 128, (256, 256)):
            raise RuntimeError("boom")
    assert _state(unet) == before_state


def test_dilation_only_on_the_listed_convs_and_only_when_asked(tiny_model):
    unet = tiny_model.pipe.unet
    # A UNet the renderer has sharded wraps each conv as `<name>.inner`.
    convs = {
        name.removesuffix(".inner"): m for name, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d)
    }
    assert set(DILATED_CONVS) <= set(convs)
    with scale_fusion(unet, 128, (384, 512), freeu=None) as handle:
        for name, conv in convs.items():
            expected = (3, 4) if name in DILATED_CONVS else (1, 1)
            assert conv.dilation == expected, name
            if name in DILATED_CONVS:
                assert conv.padding == (3, 4)
        handle.begin_step(1, 40, dilate=False)
        assert all(conv.dilation == (1, 1) for conv in convs.values())
        assert all(convs[name].padding == (1, 1) for name in DILATED_CONVS)
    with scale_fusion(unet, 128, (512, 512), dilation=False):
        assert all(conv.dilation == (1, 1) for conv in convs.values())


def test_freeu_hooks_follow_the_channel_rule(tiny_model):
    # SDXL: up_blocks.0 (1280 in) -> (b1, s1); up_blocks.1.resnets.0 still sees 1280 -> (b1, s1);
    # its other resnets and up_blocks.2.resnets.0 see 640 -> (b2, s2). The tiny model has the same shape.
    unet = tiny_model.pipe.unet
    names = {id(m): n for n, m in unet.named_modules()}
    found = [(names[id(resnet)], hidden, pair) for resnet, hidden, pair in freeu_targets(unet)]
    assert found == [
        ("up_blocks.0.resnets.0", 128, 0),
        ("up_blocks.0.resnets.1", 128, 0),
        ("up_blocks.0.resnets.2", 128, 0),
        ("up_blocks.1.resnets.0", 128, 0),
        ("up_blocks.1.resnets.1", 64, 1),
        ("up_blocks.1.resnets.2", 64, 1),
        ("up_blocks.2.resnets.0", 64, 1),
    ]


def test_freeu_edits_backbone_half_and_skip(tiny_model):
    from freescale.method.freeu import FreeUPreHook, fourier_filter

    hook = FreeUPreHook(hidden_channels=4, backbone_scale=1.1, skip_scale=0.6)
    x = torch.randn(1, 7, 6, 6)
    (out, temb), _ = hook(None, (x, "temb"), {})
    assert temb == "temb"
    assert torch.allclose(out[:, :2], x[:, :2] * 1.1) and torch.equal(out[:, 2:4], x[:, 2:4])
    assert torch.allclose(out[:, 4:], fourier_filter(x[:, 4:], 0.6))


def test_freeu_none_leaves_unet_alone(tiny_model):
    unet = tiny_model.pipe.unet
    inputs = _unet_inputs(tiny_model.pipe, size=16)
    with torch.no_grad():
        plain = unet(**inputs).sample
        with scale_fusion(unet, 128, (128, 128), freeu=None, dilation=False):
            # n = 1: one window, kernel 1: the fused attention is ordinary attention.
            fused = unet(**inputs).sample
    assert torch.allclose(fused, plain, atol=1e-5)
