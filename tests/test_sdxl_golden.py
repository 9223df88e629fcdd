"""SDXL renders are bit-identical to those made before the tree was restructured (issue 10).

The hashes below were recorded on the old flat tree (commit 1c6b109) with this very file: each recipe
is rendered through the CLI and the sha256 of the decoded pixels is compared. Pixels, not file bytes,
because a recipe chunk may gain keys (model family) without the image changing.
"""

import hashlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from freescale.cli import commands as cli

# (CLI arguments, output file name, sha256 of the decoded pixels)
GOLDEN = [
    (["a red fox", "--steps", "4", "--seed", "3", "--scale", "4"], "plain.png",
     "uint8(512, 512, 3):86cb0160504ddc5f8710f35fac6798319704d7ecd91b82c5717a4ac493231504"),
    (["a lighthouse", "--steps", "5", "--stages", "128,192x256", "--fast-mode", "--blur", "2d",
      "--freeu", "1.2,1.3,0.7,0.5", "--cosine-scale", "1.0"], "fast.png",
     "uint8(256, 192, 3):73e05715b68e869c1d18f7bf6a447f6a8733a7322a65aa75a8d56819131f0db0"),
    (["a koi pond", "--steps", "5", "--stages", "128,256", "--preset", "detail", "--mask", "{mask}",
      "--guidance", "5", "--restart", "0.4", "--dilate-tau", "3"], "detail.png",
     "uint8(256, 256, 3):cd9fe0bcfc760a0ee93de57c6e67bf1d91e2e086dd0768e0caf28d7c5cf6e8e0"),
    (["a harbour", "--steps", "4", "--scale", "2", "--no-freeu", "--bit-depth", "16", "--seed", "11"],
     "deep.tif", "uint16(256, 256, 3):2c3c568f0b29ce5b194a99e91d898f77a3075cff052272e18e9ac0f44c976a3a"),
]  # fmt: skip


def pixel_hash(path) -> str:
    if str(path).endswith(".tif"):
        pixels = tifffile.imread(path)
    else:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    return (
        f"{pixels.dtype}{pixels.shape}:" + hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    )


def render_golden(argv, name, tmp_path) -> str:
    mask = tmp_path / "mask.png"
    if not mask.exists():
        m = np.zeros((40, 40), dtype=np.uint8)
        m[8:30, 5:22] = 255
        Image.fromarray(m).save(mask)
    out = tmp_path / name
    args = [a.replace("{mask}", str(mask)) for a in argv]
    assert cli.main(["render", *args, "--quiet", "-o", str(out)]) == 0
    return pixel_hash(out)


@pytest.mark.parametrize("argv, name, expected", GOLDEN, ids=[g[1] for g in GOLDEN])
def test_sdxl_render_is_bit_identical_to_the_old_tree(argv, name, expected, tmp_path):
    assert render_golden(argv, name, tmp_path) == expected


# sha256 of one `freescale.scale_fusion` UNet call's output (float32 bytes) on the built-in model.
SCALE_FUSION_GOLDEN = "ad4193a1f3100636968d31578515b3d66da51fe612db949e49f8c0bced8311ee"


def scale_fusion_output_hash(model) -> str:
    import torch

    import freescale

    unet = model.pipe.unet
    generator = torch.Generator().manual_seed(0)
    inputs = dict(
        sample=torch.randn(2, 4, 48, 64, generator=generator),
        timestep=torch.tensor(500),
        encoder_hidden_states=torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator),
        added_cond_kwargs={
            "text_embeds": torch.randn(2, 32, generator=generator),
            "time_ids": torch.tensor([[128, 128, 0, 0, 128, 128]] * 2),
        },
    )
    with torch.no_grad(), freescale.scale_fusion(
        unet, native_size=(128, 128), target_size=(384, 512), fast_mode=False, dilation=True,
        freeu=(1.1, 1.2, 0.6, 0.4), jitter_seed=5,
    ) as fusion:  # fmt: skip
        fusion.begin_step(stage=1, step=2, dilate=True)
        out = unet(**inputs).sample
    return hashlib.sha256(out.contiguous().numpy().tobytes()).hexdigest()


def test_scale_fusion_api_is_bit_identical_to_the_old_tree(tiny_model):
    assert scale_fusion_output_hash(tiny_model) == SCALE_FUSION_GOLDEN
