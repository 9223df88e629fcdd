"""--lora: LoRA files fused into the tiny models' weights equal weights merged by hand, render the same on
one and two ranks, load from diffusers and kohya layouts, are recorded in recipes and refused early."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from freescale.cli import commands as cli
from freescale.cluster.sharding.local_ranks import run_ranks
from freescale.cluster.sharding.rank_state import RankState
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.config.lora_option import parse_loras, split_lora_text
from freescale.config.render_config import build_config
from freescale.errors import ConfigError
from freescale.models import loading, lora_fusing
from freescale.rendering.rank_render import render_on_rank, take_strip
from freescale.rendering.renderer import recipe

RANK = 4
# Layers the method patches (self-attention: scale fusion; the rest plain Linear layers) and one conv.
SDXL_LAYERS = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.2.attentions.1.transformer_blocks.1.attn1.to_v",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
    "up_blocks.0.attentions.2.proj_out",
    "up_blocks.1.resnets.0.conv1",
)
SD15_LAYERS = (
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
)
BASE = {"prompt": "a red fox", "scale": 2, "steps": 2, "dilate_tau": 1, "seed": 3}


def _pair(module: torch.nn.Module, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (down, up) for a Linear or a Conv2d, small enough that the render stays an image."""
    if isinstance(module, torch.nn.Conv2d):
        down = torch.randn(RANK, module.in_channels, *module.kernel_size, generator=generator)
        up = torch.randn(module.out_channels, RANK, 1, 1, generator=generator)
    else:
        down = torch.randn(RANK, module.in_features, generator=generator)
        up = torch.randn(module.out_features, RANK, generator=generator)
    return down * 0.05, up * 0.05


def make_lora(unet, path, layers=SDXL_LAYERS, kohya=False, alpha=None, seed=0) -> dict:
    """Writes a LoRA of `layers` (diffusers PEFT names, or kohya's with an alpha); returns name -> (down,
    up, alpha / rank)."""
    generator = torch.Generator().manual_seed(seed)
    tensors, pairs = {}, {}
    for name in layers:
        down, up = _pair(unet.get_submodule(name), generator)
        if kohya:
            key = "lora_unet_" + name.replace(".", "_")
            tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
            tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
        else:
            tensors[f"unet.{name}.lora_A.weight"], tensors[f"unet.{name}.lora_B.weight"] = down, up
        pairs[name] = (down, up, (alpha if kohya else RANK) / RANK)
    save_file(tensors, str(path))
    return pairs


def merge_by_hand(unet, pairs: dict, weight: float) -> None:
    """W + weight * up @ down * alpha / rank, in place."""
    with torch.no_grad():
        for name, (down, up, scale) in pairs.items():
            module = unet.get_submodule(name)
            delta = (up.flatten(1) @ down.flatten(1)).reshape(module.weight.shape)
            module.weight += delta * (scale * weight)


def render(model, output: str, **values) -> dict:
    """One rank's (or a rank of a group's) render: latents of every stage and the last stage's rows."""
    group = values.pop("group", ShardGroup.single())
    state = RankState(group.rank, group.world, group, model, model.device)
    config = build_config({**BASE, "output": output, **values}, native_size=128)
    result = render_on_rank(state, config)
    strips = []
    while (strip := take_strip(state, len(config.stages) - 1)) is not None:
        strips.append(strip)
    result["rows"] = np.concatenate(strips) if strips else None
    return result


def load(lora_values=(), model="tiny", allow_pickle=False):
    lora = parse_loras(list(lora_values), allow_pickle)
    return loading.load_model(loading.resolve_model_source(model, lora=lora), device="cpu")


@pytest.fixture(scope="module")
def lora_path(tmp_path_factory):
    torch.set_num_threads(2)
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    pairs = make_lora(loading.builtin_pipeline("tiny").unet, path)
    return path, pairs


@pytest.fixture(scope="module")
def lora_render(lora_path, tmp_path_factory):
    path, _ = lora_path
    out = str(tmp_path_factory.mktemp("out") / "o.png")
    return render(load([f"{path}:0.7"]), out), out


def test_fused_modules_are_plain_with_merged_weights(lora_path):
    path, pairs = lora_path
    fused, by_hand = load([f"{path}:0.7"]), load()
    merge_by_hand(by_hand.pipe.unet, pairs, 0.7)
    assert [type(m) for m in fused.pipe.unet.modules()] == [type(m) for m in by_hand.pipe.unet.modules()]
    for (name, a), (_, b) in zip(
        fused.pipe.unet.named_parameters(), by_hand.pipe.unet.named_parameters(), strict=True
    ):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name
    assert any(not torch.equal(fused.pipe.unet.get_submodule(n).weight,
                               load().pipe.unet.get_submodule(n).weight) for n in pairs)  # fmt: skip


def test_render_with_a_lora_equals_hand_merged_weights(lora_path, lora_render):
    """Scale fusion, dilation and FreeU run on the fused UNet exactly as on weights merged by hand."""
    _, pairs = lora_path
    got, out = lora_render
    by_hand = load()
    merge_by_hand(by_hand.pipe.unet, pairs, 0.7)
    expected = render(by_hand, out)
    for stage_got, stage_expected in zip(got["latents"], expected["latents"], strict=True):
        assert (stage_got - stage_expected).abs().max() <= 1e-5
    assert np.abs(got["rows"].astype(int) - expected["rows"].astype(int)).max() <= 1


def render_with_lora(group, lora_text: str, output: str) -> dict:
    return render(load([lora_text]), output, group=group)


def test_two_ranks_with_a_lora_equal_one(lora_path, lora_render):
    path, _ = lora_path
    reference, out = lora_render
    ranks = run_ranks(2, render_with_lora, f"{path}:0.7", out)
    for stage_ref, stage_got in zip(reference["latents"], ranks[0]["latents"], strict=True):
        assert (stage_ref - stage_got).abs().max() <= 1e-4
    image = np.concatenate([r["rows"] for r in ranks if r["rows"] is not None]).astype(int)
    assert image.shape == reference["rows"].shape == (256, 256, 3)
    assert np.abs(image - reference["rows"].astype(int)).max() <= 1


def test_a_kohya_lora_loads_with_its_alpha(tmp_path):
    path = tmp_path / "kohya.safetensors"
    pairs = make_lora(loading.builtin_pipeline("tiny").unet, path, kohya=True, alpha=2.0, seed=5)
    fused, by_hand = load([str(path)]), load()
    merge_by_hand(by_hand.pipe.unet, pairs, 1.0)
    for name in pairs:
        a, b = fused.pipe.unet.get_submodule(name).weight, by_hand.pipe.unet.get_submodule(name).weight
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


def test_two_loras_fuse_in_order_and_an_sd15_lora_fits_sd15(tmp_path, lora_path):
    path, pairs = lora_path
    other = tmp_path / "other.safetensors"
    other_pairs = make_lora(loading.builtin_pipeline("tiny").unet, other, seed=9)
    fused, by_hand = load([f"{path}:0.5", f"{other}:-1"]), load()
    merge_by_hand(by_hand.pipe.unet, pairs, 0.5)
    merge_by_hand(by_hand.pipe.unet, other_pairs, -1.0)
    for name in pairs:
        a, b = fused.pipe.unet.get_submodule(name).weight, by_hand.pipe.unet.get_submodule(name).weight
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name
    sd15 = tmp_path / "sd15.safetensors"
    make_lora(loading.builtin_pipeline("tiny-sd15").unet, sd15, SD15_LAYERS)
    assert "lora(sha256" in load([str(sd15)], model="tiny-sd15").identity


def test_the_recipe_records_each_file_and_a_changed_file_is_refused(lora_path, tmp_path):
    path, _ = lora_path
    config = build_config({**BASE, "output": str(tmp_path / "o.png"), "lora": [f"{path}:0.7"]}, 128)
    model = load([f"{path}:0.7"])
    stamp = json.loads(json.dumps(recipe(config, model.identity)))
    (entry,) = stamp["lora"]
    assert entry["path"] == str(path) and entry["weight"] == 0.7 and len(entry["sha256"]) == 64
    assert entry["sha256"] in stamp["model_identity"] and "weight 0.7" in stamp["model_identity"]
    assert model.identity != load().identity  # checkpoints of another LoRA (or none) are refused
    again = build_config({**BASE, "output": str(tmp_path / "o.png"), "lora": stamp["lora"]}, 128)
    assert again.lora == config.lora
    with pytest.raises(ConfigError, match="recorded with"):
        parse_loras([{**entry, "sha256": "0" * 64}], False)


def test_a_batch_of_two_jobs_fuses_the_lora_once(lora_path, tmp_path, monkeypatch, capsys):
    path, _ = lora_path
    calls = []
    real = lora_fusing.fuse_loras
    monkeypatch.setattr(
        lora_fusing, "fuse_loras", lambda pipe, loras: (calls.append(loras), real(pipe, loras))
    )
    (tmp_path / "loras").mkdir()
    shutil.copy(path, tmp_path / "loras" / "style.safetensors")  # relative to the jobs file, as images are
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "defaults: {scale: 1, steps: 2, lora: ['loras/style.safetensors:0.7']}\n"
        "jobs:\n  - {prompt: a fox, output: a.png}\n  - {prompt: a bird, output: b.png}\n"
    )
    assert cli.main(["batch", str(jobs), "--quiet", "--workers", "1"]) == 0, capsys.readouterr().err
    assert len(calls) == 1 and calls[0][0].weight == 0.7
    assert json.loads((tmp_path / "b.png.json").read_text())["lora"][0]["sha256"] == calls[0][0].sha256


@pytest.mark.parametrize("path_text", ["C:\\loras\\a.safetensors", "/x/a:b.safetensors", "a.safetensors"])
def test_only_a_number_after_the_last_colon_is_a_weight(path_text):
    assert split_lora_text(path_text) == (path_text, 1.0)
    assert split_lora_text(path_text + ":0.25") == (path_text, 0.25)
    assert split_lora_text(path_text + ":-1e-1") == (path_text, -0.1)


def _bad_inputs(tmp_path, lora_path):
    path, _ = lora_path
    (tmp_path / "style.bin").write_bytes(b"not read")
    save_file({"conv.weight": torch.zeros(2, 2)}, str(tmp_path / "plain.safetensors"))
    make_lora(loading.builtin_pipeline("tiny-sd15").unet, tmp_path / "sd15.safetensors", SD15_LAYERS)
    return {
        "missing": (str(tmp_path / "nope.safetensors"), "no such file"),
        "pickle": (str(tmp_path / "style.bin"), "pass --allow-pickle"),
        "not a lora": (str(tmp_path / "plain.safetensors"), "is not a LoRA"),
        "sd15 on sdxl": (str(tmp_path / "sd15.safetensors"), "does not fit the sdxl model"),
        "weight": (f"{path}:strong", "weight 'strong' is not a number"),
        "nan weight": (f"{path}:nan", "is not a number"),
    }


@pytest.mark.parametrize("case", ["missing", "pickle", "not a lora", "sd15 on sdxl", "weight", "nan weight"])
def test_bad_loras_exit_2_with_one_line_before_a_model_loads(case, lora_path, tmp_path, monkeypatch, capsys):
    lora, message = _bad_inputs(tmp_path, lora_path)[case]

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_model", no_loading)
    argv = ["render", "a fox", "--lora", lora, "--steps", "1", "-o", str(tmp_path / "o.png")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
