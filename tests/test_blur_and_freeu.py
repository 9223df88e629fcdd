"""The Gaussian filter G and FreeU's Fourier filter against direct slow formulas (SPEC 4, 6)."""

import math

import pytest
import torch
import torch.nn.functional as F

from freescale.method.freeu import fourier_filter, low_frequency_sums, shifted_low_frequencies
from freescale.method.gaussian_blur import gaussian_blur, gaussian_weights


def test_gaussian_weights_by_hand():
    e = math.exp(-0.5)
    expected = [e / (1 + 2 * e), 1 / (1 + 2 * e), e / (1 + 2 * e)]
    assert gaussian_weights(3) == pytest.approx(expected, abs=1e-12)
    assert gaussian_weights(1) == [1.0]
    assert sum(gaussian_weights(7)) == pytest.approx(1.0)


def _reference_blur_3d(x, kernel_size):
    """The reference's construction: outer product of three 1-D kernels, one conv3d per batch item."""
    g = torch.tensor(gaussian_weights(kernel_size), dtype=torch.float64)
    kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]
    kernel = kernel[None, None].repeat(x.shape[0], 1, 1, 1, 1)
    return F.conv3d(x[None], kernel, padding=kernel_size // 2, groups=x.shape[0])[0]


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_separable_blur_equals_3d_convolution(kernel_size):
    x = torch.randn(2, 9, 7, 5, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(x, kernel_size), _reference_blur_3d(x, kernel_size), atol=1e-12)


def test_spatial_blur_leaves_channels_alone():
    x = torch.zeros(1, 5, 5, 3, dtype=torch.float64)
    x[0, 2, 2, 1] = 1.0
    out = gaussian_blur(x, 3, channels=False)
    assert out[0, :, :, 0].abs().max() == 0 and out[0, :, :, 2].abs().max() == 0
    assert out.sum().item() == pytest.approx(1.0)


def test_fusion_of_equal_branches_is_global():
    g = torch.randn(2, 6, 6, 4)
    assert torch.equal(g + gaussian_blur(g - g, 5), g)


def _full_fft_filter(x, scale):
    """FreeU's Fourier filter exactly as written in SPEC 6: mask the shifted spectrum."""
    h, w = x.shape[-2:]
    freq = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=(-2, -1)), dim=(-2, -1))
    mask = torch.ones_like(freq.real)
    mask[..., h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1] = scale
    freq = torch.fft.ifftshift(freq * mask, dim=(-2, -1))
    return torch.fft.ifftn(freq, dim=(-2, -1)).real.to(x.dtype)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 5), (1, 1, 2, 3), (1, 2, 1, 4), (1, 1, 16, 12)])
@pytest.mark.parametrize("scale", [0.6, 0.4, 1.7])
def test_four_frequency_form_equals_full_fft(shape, scale):
    x = torch.randn(*shape)
    assert torch.allclose(fourier_filter(x, scale), _full_fft_filter(x, scale), atol=2e-5, rtol=1e-5)


def test_scale_one_is_identity():
    x = torch.randn(2, 4, 6, 10)
    assert torch.allclose(fourier_filter(x, 1.0), x, atol=0, rtol=0)


def test_low_frequencies_by_hand():
    assert shifted_low_frequencies(8) == [7, 0]
    assert shifted_low_frequencies(7) == [6, 0]
    assert shifted_low_frequencies(2) == [1, 0]
    assert shifted_low_frequencies(1) == [0]


def test_band_sums_add_up_to_the_plane():
    x = torch.randn(2, 3, 11, 6)
    whole = low_frequency_sums(x, 0, 11)
    bands = [(0, 4), (4, 5), (5, 11)]
    parts = sum(low_frequency_sums(x[..., a:b, :], a, 11) for a, b in bands)
    assert torch.allclose(parts, whole, atol=1e-4)


def test_freeu_hook_gives_the_same_result_for_positional_and_keyword_calls():
    # UNet2DConditionModel's up blocks call resnet(hidden, temb); a motion UNet's call
    # resnet(input_tensor=hidden, temb=temb). The hook must edit the input either way.
    from diffusers.models.resnet import ResnetBlock2D

    from freescale.method.freeu import FreeUPreHook

    torch.manual_seed(0)
    resnet = ResnetBlock2D(in_channels=12, out_channels=8, temb_channels=16, groups=4).eval()
    x, temb = torch.randn(2, 12, 8, 6), torch.randn(2, 16)
    with torch.no_grad():
        plain = resnet(x, temb)
        handle = resnet.register_forward_pre_hook(FreeUPreHook(8, 1.3, 0.5), with_kwargs=True)
        positional = resnet(x, temb)
        keyword = resnet(input_tensor=x, temb=temb)
        mixed = resnet(x, temb=temb)
        handle.remove()
        edited = torch.cat([x[:, :4] * 1.3, x[:, 4:8], fourier_filter(x[:, 8:], 0.5)], dim=1)
        expected = resnet(edited, temb)
    assert not torch.allclose(positional, plain)
    assert torch.equal(positional, expected)
    assert torch.equal(keyword, positional) and torch.equal(mixed, positional)
