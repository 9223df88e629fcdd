"""`scale_fusion` on a real diffusers SDXL-topology UNet: what it switches, and that it restores exactly."""

import pytest
import torch

from freescale.method.scale_attention import ScaleFusionProcessor
from freescale.method.scale_fusion import scale_fusion
from freescale.method.unet_topology import dilated_convs, spatial_self_attention


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
        [(name, m.processor) for name, m in spatial_self_attention(unet)],
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
            assert all(isinstance(m.processor, ScaleFusionProcessor) for _, m in spatial_self_attention(unet))
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


def test_dilation_only_on_the_topology_convs_and_only_when_asked(tiny_model):
    unet = tiny_model.pipe.unet
    dilated = [name for name, _ in dilated_convs(unet)]
    # A UNet the renderer has sharded wraps each conv as `<name>.inner`.
    convs = {
        name.removesuffix(".inner"): m for name, m in unet.named_modules() if isinstance(m, torch.nn.Conv2d)
    }
    assert len(dilated) == 9 and set(dilated) <= set(convs)
    with scale_fusion(unet, 128, (384, 512), freeu=None) as handle:
        for name, conv in convs.items():
            expected = (3, 4) if name in dilated else (1, 1)
            assert conv.dilation == expected, name
            if name in dilated:
                assert conv.padding == (3, 4)
        handle.begin_step(1, 40, dilate=False)
        assert all(conv.dilation == (1, 1) for conv in convs.values())
        assert all(convs[name].padding == (1, 1) for name in dilated)
    with scale_fusion(unet, 128, (512, 512), dilation=False):
        assert all(conv.dilation == (1, 1) for conv in convs.values())


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
