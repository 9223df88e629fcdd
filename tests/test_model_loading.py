"""Tests for the tiny model, offline loading of diffusers directories and original-layout single files."""

import json
import os
import shutil
import socket
import struct
import types

import numpy as np
import pytest
import torch

from freescale.errors import ConfigError
from freescale.models.loading import (
    TINY_SINGLE_FILE_NAME,
    ModelSource,
    _single_file_identity,
    load_model,
    native_size_from_configs,
    resolve_model_source,
    save_tiny_model,
)
from freescale.models.single_file_export import export_sdxl_single_file
from freescale.models.tiny_sdxl import TINY_NATIVE_SIZE, build_tiny_pipeline

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def assert_same_weights(expected, actual) -> None:
    for name in COMPONENTS:
        want = getattr(expected, name).state_dict()
        got = getattr(actual, name).state_dict()
        assert want.keys() == got.keys(), name
        for key, tensor in want.items():
            assert got[key].dtype == tensor.dtype, f"{name}.{key}"
            assert torch.equal(got[key], tensor), f"{name}.{key} differs"


def any_weights_differ(a, b) -> bool:
    sa, sb = a.unet.state_dict(), b.unet.state_dict()
    return any(not torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference():
    return build_tiny_pipeline(0)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    save_tiny_model(str(directory), seed=0, single_file=True)
    return directory


@pytest.fixture(scope="module")
def config_only_dir(saved_dir, tmp_path_factory):
    """The saved pipeline's configs and tokenizers without any weights, so a silent fallback from the
    single file to directory weights cannot make the single-file test pass."""
    target = tmp_path_factory.mktemp("config_only")
    for root, _, files in os.walk(saved_dir):
        for name in files:
            if name.endswith((".json", ".txt")):
                rel = os.path.relpath(os.path.join(root, name), saved_dir)
                os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
                shutil.copy(os.path.join(root, name), os.path.join(target, rel))
    return target


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_tiny_pipeline_is_deterministic_per_seed_and_leaves_global_rng(reference):
    state = torch.random.get_rng_state()
    again = build_tiny_pipeline(0)
    assert torch.equal(state, torch.random.get_rng_state())
    assert_same_weights(reference, again)
    assert any_weights_differ(reference, build_tiny_pipeline(1))
    for name in COMPONENTS:
        module = getattr(reference, name)
        assert not module.training
        assert all(p.dtype == torch.float32 for p in module.parameters())


def test_tiny_pipeline_generates_a_sane_image(reference):
    out = reference(
        "a red fox",
        num_inference_steps=4,
        guidance_scale=5,
        height=TINY_NATIVE_SIZE,
        width=TINY_NATIVE_SIZE,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert out.shape == (TINY_NATIVE_SIZE, TINY_NATIVE_SIZE, 3)
    assert np.isfinite(out).all()
    pixels = np.round(out * 255)
    assert pixels.std() > 5
    assert ((pixels > 0) & (pixels < 255)).mean() > 0.8


def test_native_size_is_read_from_config(reference):
    loaded = load_model(resolve_model_source("tiny"), device="cpu")
    assert loaded.native_size == TINY_NATIVE_SIZE == 128
    assert loaded.identity == "tiny(seed=0)"
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    unet = types.SimpleNamespace(**{**reference.unet.config, "sample_size": 64})
    assert native_size_from_configs(unet, reference.vae.config) == 512
    sdxl_unet = types.SimpleNamespace(sample_size=128)
    assert native_size_from_configs(sdxl_unet, reference.vae.config) == 1024
    three_level_vae = types.SimpleNamespace(block_out_channels=(16, 32, 32))
    assert native_size_from_configs(reference.unet.config, three_level_vae) == 64


def test_directory_round_trip_is_bit_identical(reference, saved_dir, no_network):
    source = resolve_model_source(str(saved_dir))
    assert source == ModelSource(kind="directory", path=str(saved_dir), config_dir=None)
    loaded = load_model(source, device="cpu", dtype="fp32")
    assert_same_weights(reference, loaded.pipe)
    assert loaded.identity == f"directory:{saved_dir}"
    assert loaded.native_size == 128


def test_single_file_round_trip_is_bit_identical(reference, saved_dir, config_only_dir, no_network):
    path = str(saved_dir / TINY_SINGLE_FILE_NAME)
    source = resolve_model_source(path, str(config_only_dir))
    assert source == ModelSource(kind="single_file", path=path, config_dir=str(config_only_dir))
    loaded = load_model(source, device="cpu", dtype="fp32")
    assert_same_weights(reference, loaded.pipe)
    assert loaded.identity.startswith(f"single_file:{path} (sampled sha256 ")
    assert loaded.native_size == 128
    # Without model_config, the file's own directory is the config directory when it is a pipeline.
    assert resolve_model_source(path).config_dir == str(saved_dir)


def test_single_file_uses_original_sdxl_key_layout(saved_dir):
    raw = (saved_dir / TINY_SINGLE_FILE_NAME).read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.2.2.conv.weight",
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight",
        "model.diffusion_model.label_emb.0.2.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.post_quant_conv.weight",
        "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
        "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight",
        "conditioner.embedders.1.model.text_projection",
    ):
        assert key in header, key
    assert header["first_stage_model.encoder.mid.attn_1.q.weight"]["shape"] == [32, 32, 1, 1]
    # OpenCLIP stores (width, projection): transposed relative to HF's Linear weight (32 x 64).
    assert header["conditioner.embedders.1.model.text_projection"]["shape"] == [64, 32]
    assert header["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"]["shape"] == [
        192,
        64,
    ]
    assert not [n for n in os.listdir(saved_dir) if n.startswith(".tmp-")]


def test_export_replaces_existing_file_atomically(reference, tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    export_sdxl_single_file(reference, str(target))
    assert target.stat().st_size > 1000
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_single_file_identity_tells_same_layout_checkpoints_apart(reference, saved_dir, tmp_path):
    export_sdxl_single_file(reference, str(tmp_path / "a.safetensors"))
    export_sdxl_single_file(build_tiny_pipeline(1), str(tmp_path / "b.safetensors"))
    digests = [_single_file_identity(str(tmp_path / f"{name}.safetensors")).split("(")[1] for name in "ab"]
    assert digests[0] != digests[1]
    same = _single_file_identity(str(saved_dir / TINY_SINGLE_FILE_NAME)).split("(")[1]
    assert same == digests[0]


def test_fp16_keeps_force_upcast_vae_in_fp32(reference, saved_dir):
    loaded = load_model(resolve_model_source(str(saved_dir)), device="cpu", dtype="fp16")
    assert loaded.dtype == torch.float16
    assert loaded.pipe.unet.dtype == torch.float16
    assert loaded.pipe.text_encoder_2.dtype == torch.float16
    assert loaded.pipe.vae.dtype == torch.float32
    vae_state = loaded.pipe.vae.state_dict()
    assert all(torch.equal(vae_state[k], v) for k, v in reference.vae.state_dict().items())
    tiny = load_model(resolve_model_source("tiny"), device="cpu", dtype="bf16")
    assert tiny.pipe.unet.dtype == torch.bfloat16 and tiny.pipe.vae.dtype == torch.bfloat16


def test_offline_environment_is_set():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


def _write_safetensors_like(path, header: dict) -> None:
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body)


def test_bad_model_arguments_name_the_bad_value(tmp_path, saved_dir):
    missing = tmp_path / "nope"
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x" * 100)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    not_json = tmp_path / "notjson.safetensors"
    not_json.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    lora = tmp_path / "lora.safetensors"
    _write_safetensors_like(lora, {"lora_unet.alpha": {"dtype": "F32", "shape": [], "data_offsets": [0, 0]}})
    lonely = tmp_path / "lonely.safetensors"
    shutil.copy(saved_dir / TINY_SINGLE_FILE_NAME, lonely)
    good = str(saved_dir / TINY_SINGLE_FILE_NAME)
    cases = [
        (str(missing), None, str(missing)),
        (str(empty_dir), None, str(empty_dir)),
        (str(ckpt), None, str(ckpt)),
        (str(garbage), None, str(garbage)),
        (str(not_json), None, str(not_json)),
        (str(lora), None, str(lora)),
        (str(lonely), None, str(lonely)),
        (good, str(missing), str(missing)),
        (good, str(empty_dir), str(empty_dir)),
        ("tiny", str(saved_dir), str(saved_dir)),
    ]
    for model, model_config, named in cases:
        with pytest.raises(ConfigError) as err:
            resolve_model_source(model, model_config)
        message = str(err.value)
        assert named in message, message
        assert "\n" not in message


def test_bad_dtype_and_device_are_config_errors():
    source = resolve_model_source("tiny")
    with pytest.raises(ConfigError, match="'float64'"):
        load_model(source, device="cpu", dtype="float64")
    with pytest.raises(ConfigError, match="'gpu0'"):
        load_model(source, device="gpu0")
    with pytest.raises(ConfigError, match="not valid"):
        load_model(ModelSource(kind="bogus", path=None, config_dir=None), device="cpu")


def test_loaded_model_names_its_family_and_sd21_has_no_tiny_model(tmp_path):
    loaded = load_model(resolve_model_source("tiny"), device="cpu")
    assert loaded.family.name == "sdxl" and loaded.family.text_encoders == 2
    with pytest.raises(ConfigError, match="'sd21'.*sdxl, sd15"):
        save_tiny_model(str(tmp_path / "m"), family="sd21")
    assert not (tmp_path / "m").exists()
