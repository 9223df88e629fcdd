"""SD1.5 end to end on the built-in tiny-sd15 model: its topology, text-only conditioning, loading from a
diffusers directory and an original-layout single file, a CLI render, native sizes and the plan."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
from PIL import Image

from freescale.cli import main
from freescale.models.conditioning import encode_conditioning
from freescale.models.families import family_of_source
from freescale.models.loading import load_model, resolve_model_source, save_tiny_model
from freescale.models.model_source import ModelSource
from freescale.models.native_resolution import native_size_of
from freescale.models.tiny_sd15 import build_tiny_sd15_pipeline

COMPONENTS = ("unet", "vae", "text_encoder")


@pytest.fixture(scope="module")
def reference():
    return build_tiny_sd15_pipeline(0)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_sd15")
    save_tiny_model(str(directory), seed=0, single_file=True, family="sd15")
    return directory


@pytest.fixture(scope="module")
def config_only_dir(saved_dir, tmp_path_factory):
    """The saved configs and tokenizer without weights: a single-file load cannot fall back to them."""
    target = tmp_path_factory.mktemp("sd15_config_only")
    for root, _, files in os.walk(saved_dir):
        for name in files:
            if name.endswith((".json", ".txt")):
                rel = os.path.relpath(os.path.join(root, name), saved_dir)
                os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
                shutil.copy(os.path.join(root, name), os.path.join(target, rel))
    return target


def assert_same_weights(expected, actual) -> None:
    for name in COMPONENTS:
        want, got = getattr(expected, name).state_dict(), getattr(actual, name).state_dict()
        assert want.keys() == got.keys(), name
        for key, tensor in want.items():
            assert got[key].dtype == tensor.dtype and torch.equal(got[key], tensor), f"{name}.{key}"


def test_tiny_sd15_has_sd15_topology(reference):
    unet = reference.unet
    assert isinstance(reference, StableDiffusionPipeline) and reference.safety_checker is None
    assert [type(b).__name__ for b in unet.down_blocks] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert type(unet.mid_block).__name__ == "UNetMidBlock2DCrossAttn"
    assert [type(b).__name__ for b in unet.up_blocks] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert [len(b.resnets) for b in unet.down_blocks] == [2] * 4
    assert sum(b.downsamplers is not None for b in unet.down_blocks) == 3  # bands align to 8 latent rows
    assert tuple(unet.config.block_out_channels) == (32, 64, 128, 128)
    assert unet.config.addition_embed_type is None and unet.config.sample_size == 16
    assert isinstance(reference.scheduler, EulerDiscreteScheduler)
    assert reference.vae.config.scaling_factor == 0.18215
    again = build_tiny_sd15_pipeline(0)
    assert_same_weights(reference, again)
    other = build_tiny_sd15_pipeline(1).unet.state_dict()
    assert any(not torch.equal(v, other[k]) for k, v in reference.unet.state_dict().items())


def test_conditioning_is_text_only(reference):
    cond = encode_conditioning(reference, "a red fox", "blurry", 7.5, (128, 128))
    assert cond.pooled_embeds is None and cond.time_ids is None
    whole = cond.unet_kwargs()
    assert list(whole) == ["encoder_hidden_states"] and whole["encoder_hidden_states"].shape == (2, 77, 32)
    negative, positive = cond.unet_kwargs(0), cond.unet_kwargs(1)
    assert torch.equal(negative["encoder_hidden_states"][0], whole["encoder_hidden_states"][0])
    assert torch.equal(positive["encoder_hidden_states"][0], whole["encoder_hidden_states"][1])
    # The same embeddings diffusers' own pipeline would feed its UNet.
    embeds, negative_embeds = reference.encode_prompt("a red fox", "cpu", 1, True, "blurry")
    assert torch.equal(whole["encoder_hidden_states"], torch.cat([negative_embeds, embeds]))
    unguided = encode_conditioning(reference, "a red fox", "", 1.0, (128, 128))
    assert unguided.unet_kwargs()["encoder_hidden_states"].shape[0] == 1


def test_directory_round_trip_is_bit_identical(reference, saved_dir):
    source = resolve_model_source(str(saved_dir))
    loaded = load_model(source, device="cpu", dtype="fp32")
    assert isinstance(loaded.pipe, StableDiffusionPipeline) and loaded.family.name == "sd15"
    assert_same_weights(reference, loaded.pipe)
    assert loaded.native_size == native_size_of(source) == 128


def test_single_file_round_trip_is_bit_identical(reference, saved_dir, config_only_dir):
    path = str(saved_dir / "tiny_sd15.safetensors")
    source = resolve_model_source(path, str(config_only_dir))
    assert source == ModelSource(kind="single_file", path=path, config_dir=str(config_only_dir))
    loaded = load_model(source, device="cpu", dtype="fp32")
    assert isinstance(loaded.pipe, StableDiffusionPipeline) and loaded.family.name == "sd15"
    assert_same_weights(reference, loaded.pipe)
    assert loaded.native_size == 128


def test_single_file_uses_original_sd15_key_layout(saved_dir):
    from freescale.models.safetensors_header import read_safetensors_header

    _, header = read_safetensors_header(str(saved_dir / "tiny_sd15.safetensors"))
    for key in (
        "model.diffusion_model.input_blocks.9.0.op.weight",  # the third and last down-sampler
        "model.diffusion_model.input_blocks.11.0.out_layers.3.weight",  # DownBlock2D, no attention
        "model.diffusion_model.input_blocks.1.1.proj_in.weight",
        "model.diffusion_model.middle_block.2.in_layers.2.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",  # UpBlock2D's up-sampler, no attention
        "model.diffusion_model.output_blocks.5.2.conv.weight",
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
    ):
        assert key in header, key
    assert not any(k.startswith(("conditioner.", "model.diffusion_model.label_emb")) for k in header)
    assert header["model.diffusion_model.input_blocks.1.1.proj_in.weight"]["shape"] == [32, 32, 1, 1]


def test_tiny_sd15_renders_through_the_cli(tmp_path):
    out = tmp_path / "fox.png"
    argv = ["render", "a red fox", "--model", "tiny-sd15", "--steps", "3", "--scale", "2", "-o", str(out)]
    assert main(argv) == 0
    with Image.open(out) as image:
        assert image.size == (256, 256) and image.mode == "RGB"
        pixels = np.asarray(image)
    assert pixels.std() > 5


@pytest.mark.parametrize(("sample_size", "text_width", "native"), [(64, 768, 512), (96, 1024, 768)])
def test_native_size_of_a_directory_is_read_from_its_configs(tmp_path, sample_size, text_width, native):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    configs = {
        "unet": {"sample_size": sample_size, "cross_attention_dim": text_width},
        "vae": {"block_out_channels": [128, 256, 512, 512]},
    }
    for component, config in configs.items():
        (tmp_path / component).mkdir()
        (tmp_path / component / "config.json").write_text(json.dumps(config))
    # Made by hand: this directory holds only the configs read here (resolve_model_source would refuse it
    # for its missing components and weights).
    source = ModelSource(kind="directory", path=str(tmp_path), config_dir=None)
    assert native_size_of(source) == native
    assert family_of_source(source).name == ("sd15" if text_width == 768 else "sd21")


def test_plan_of_sd15(capsys):
    assert main(["plan", "--model", "sd15"]) == 0
    out = capsys.readouterr().out
    assert "1024x1024 with sd15 (native 512)" in out
    assert "peak memory per worker" in out


def test_stored_sd15_profiles_are_these_architectures(saved_dir):
    from freescale.models.sd15_unet import SD15_UNET_CONFIG, SD15_UNET_PARAMETERS
    from freescale.planning.model_spec import model_spec
    from freescale.planning.unet_profile import build_meta_unet, profile_unet

    sd15 = model_spec("sd15")
    assert (sd15.native_size, sd15.vae_scale, sd15.vae_tile, sd15.vae_force_upcast) == (512, 8, 512, True)
    assert (sd15.unet.parameters, sd15.text_parameters, sd15.vae_parameters) == (
        SD15_UNET_PARAMETERS,
        123_060_480,
        83_653_863,
    )
    config = dict(SD15_UNET_CONFIG)
    assert sd15.unet == profile_unet(build_meta_unet(config), config)
    assert sd15.unet.align == 8 and sum(c.dilated for c in sd15.unet.convs) == 9
    builtin = model_spec("tiny-sd15")
    for spec in (model_spec(str(saved_dir)), model_spec(str(saved_dir / "tiny_sd15.safetensors"))):
        assert spec.unet == builtin.unet and spec.native_size == 128
        assert (spec.text_parameters, spec.vae_parameters) == (
            builtin.text_parameters,
            builtin.vae_parameters,
        )
