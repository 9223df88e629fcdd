"""Untrusted model files, presets, recipes, jobs, output places, checkpoints and prompts (issue 15 points 3,
6 and 7): each bad one is one line and exit 2 (or one failed job, or one warning), found before any model
loads where it can be."""

import json
import os
import shutil
import struct

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from freescale import cli
from freescale.errors import ConfigError
from freescale.models import loading
from freescale.models.loading import TINY_SINGLE_FILE_NAME, load_model, resolve_model_source, save_tiny_model

FAST = ["--steps", "2", "--scale", "2", "--seed", "3", "--quiet"]  # stages 128x128, 256x256


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    save_tiny_model(str(directory), single_file=True)
    return directory


@pytest.fixture
def model_copy(saved_model, tmp_path):
    """A copy of the saved tiny model made of hard links: replace a file (unlink, write), never edit one."""
    copy = tmp_path / "model"
    shutil.copytree(saved_model, copy, copy_function=os.link)
    return copy


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr(loading, "load_model", refuse)


def replace_file(path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def pickle_component(model_dir, component: str, weights: str, pickled: str) -> None:
    """Swap a component's safetensors for a torch.save pickle of the same tensors."""
    safetensors_file = model_dir / component / weights
    torch.save(safetensors.torch.load_file(safetensors_file), model_dir / component / pickled)
    safetensors_file.unlink()


def one_line_error(argv, capsys, *named) -> str:
    """`freescale` exits 2 with one line naming every one of `named`."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("freescale: error: "), err
    for text in named:
        assert str(text) in err, err
    return err


def render_argv(model, tmp_path, *extra) -> list[str]:
    return ["render", "x", "--model", str(model), *FAST, "-o", str(tmp_path / "out.png"), *map(str, extra)]


# -- point 3: pickled weights need --allow-pickle ---------------------------------------------------------


@pytest.mark.parametrize(
    "component, weights, pickled",
    [
        ("unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
        ("text_encoder", "model.safetensors", "pytorch_model.bin"),
    ],
)
def test_a_directory_with_pickled_weights_is_refused(
    model_copy, tmp_path, capsys, no_loading, component, weights, pickled
):
    pickle_component(model_copy, component, weights, pickled)
    named = model_copy / component / pickled
    one_line_error(render_argv(model_copy, tmp_path), capsys, named, "--allow-pickle")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_a_pickled_single_file_is_refused(saved_model, tmp_path, capsys, no_loading, suffix):
    pickled = saved_model / f"tiny_sdxl{suffix}"
    if not pickled.exists():
        torch.save(safetensors.torch.load_file(saved_model / TINY_SINGLE_FILE_NAME), pickled)
    one_line_error(render_argv(pickled, tmp_path), capsys, pickled, "--allow-pickle")


def test_allow_pickle_loads_pickled_weights_and_renders_the_same(saved_model, model_copy, tmp_path, capsys):
    pickle_component(model_copy, "unet", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    expected = load_model(resolve_model_source(str(saved_model)), device="cpu")
    loaded = load_model(resolve_model_source(str(model_copy), allow_pickle=True), device="cpu")
    for name, weight in expected.pipe.unet.state_dict().items():
        assert torch.equal(loaded.pipe.unet.state_dict()[name], weight), name
    single = tmp_path / "tiny.ckpt"
    torch.save(safetensors.torch.load_file(saved_model / TINY_SINGLE_FILE_NAME), single)
    source = resolve_model_source(str(single), str(saved_model), allow_pickle=True)
    assert source.kind == "single_file" and source.allow_pickle
    # The flag reaches the pool that loads the model.
    assert cli.main(render_argv(model_copy, tmp_path, "--allow-pickle")) == 0
    assert (tmp_path / "out.png").exists()


def test_directories_load_with_use_safetensors(saved_model, monkeypatch):
    seen = []
    real = loading.StableDiffusionXLPipeline.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        seen.append(kwargs.get("use_safetensors"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(loading.StableDiffusionXLPipeline, "from_pretrained", classmethod(recording))
    load_model(resolve_model_source(str(saved_model)), device="cpu")
    assert seen == [True]


# -- point 3: corrupt, truncated or inconsistent weights and configs --------------------------------------


def test_a_truncated_safetensors_component_is_named(model_copy, tmp_path, capsys, no_loading):
    unet = model_copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = unet.read_bytes()
    replace_file(unet, data[: len(data) - 1000])
    one_line_error(render_argv(model_copy, tmp_path), capsys, unet, "truncated")


def test_a_truncated_single_file_is_named(saved_model, tmp_path, capsys, no_loading):
    cut = tmp_path / TINY_SINGLE_FILE_NAME
    data = (saved_model / TINY_SINGLE_FILE_NAME).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    one_line_error(render_argv(cut, tmp_path, "--model-config", saved_model), capsys, cut, "truncated")


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + data


def f32(shape, begin, end) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x00" * 5000, "bad header length"),
        (struct.pack("<Q", 8) + b"not json" + b"\0" * 64, "bad JSON header"),
        (safetensors_bytes({"w": f32([4], 0, 8)}, b"\0" * 8), "needs 16"),
        (safetensors_bytes({"w": f32([2], 0, 8)}, b"\0" * 20), "longer"),
        (safetensors_bytes({"w": f32([-2], 0, 8)}, b"\0" * 8), "shape"),
        (safetensors_bytes({"a": f32([2], 0, 8), "b": f32([2], 4, 12)}, b"\0" * 12), "overlaps"),
    ],
)
def test_garbage_and_inconsistent_safetensors_are_named(model_copy, content, message, capsys, tmp_path):
    vae = model_copy / "vae" / "diffusion_pytorch_model.safetensors"
    replace_file(vae, content)
    with pytest.raises(ConfigError, match=message) as err:
        resolve_model_source(str(model_copy))
    assert str(vae) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "file, text, named",
    [
        ("model_index.json", '{"_class_name": "StableDiffusionXLPipeline", ', "not valid JSON"),
        ("model_index.json", '["StableDiffusionXLPipeline"]', "not a JSON object"),
        ("model_index.json", None, "unet is 5"),
        ("unet/config.json", "{{", "not valid JSON"),
        ("unet/config.json", None, "sample_size is -16"),
        ("vae/config.json", None, "block_out_channels is []"),
        ("text_encoder/config.json", None, "hidden_size is '32'"),
    ],
)
def test_malformed_model_configs_are_one_line(model_copy, tmp_path, capsys, no_loading, file, text, named):
    path = model_copy / file
    if text is None:  # a JSON file with one bad value
        data = json.loads(path.read_text())
        changes = {
            "model_index.json": {"unet": 5},
            "unet/config.json": {"sample_size": -16},
            "vae/config.json": {"block_out_channels": []},
            "text_encoder/config.json": {"hidden_size": "32"},
        }
        text = json.dumps({**data, **changes[file]})
    replace_file(path, text.encode())
    one_line_error(render_argv(model_copy, tmp_path), capsys, path, named)


# -- point 6: presets, recipes and jobs: known keys, values of their option's type -------------------------


@pytest.mark.parametrize(
    "yaml_text, named",
    [
        ("prompt: 5\n", "prompt is 5 (int); expected text"),
        ("negative_prompt: 3\n", "negative_prompt is 3 (int); expected text"),
        ("steps: true\n", "steps is True (bool); expected a whole number"),
        ("guidance: yes\n", "guidance is True (bool); expected a number"),
        ("seed: '3'\n", "seed is '3' (str); expected a whole number"),
        ("fast_mode: 1\n", "fast_mode is 1 (int); expected true or false"),
        ("freeu: [1.1, 1.2, true, 0.4]\n", "expected text or a list of numbers"),
        ("stages: {a: 1}\n", "stages is {'a': 1} (dict)"),
        ("blur: [3d]\n", "blur is ['3d'] (list); expected text"),
    ],
)
def test_preset_values_of_the_wrong_type_are_one_line(tmp_path, capsys, no_loading, yaml_text, named):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml_text)
    argv = ["render", "x", *FAST, "-o", str(tmp_path / "o.png"), "--preset", str(preset)]
    one_line_error(argv, capsys, preset, named)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One tiny render and its recipe."""
    out = tmp_path_factory.mktemp("rendered") / "out.png"
    assert cli.main(["render", "a red fox", *FAST, "-o", str(out)]) == 0
    return out


def test_a_recipe_as_written_loads_and_unknown_keys_or_bad_values_do_not(
    rendered, tmp_path, capsys, no_loading
):
    from freescale.config.presets import load_recipe

    recipe = json.loads(rendered.with_name(rendered.name + ".json").read_text())
    assert {"model_identity", "freescale_version", "stage", "native_size", "overwrite"} <= set(recipe)
    assert load_recipe(str(rendered) + ".json")["prompt"] == "a red fox"
    for change, named in [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"negative_prompt": 3}, "negative_prompt is 3 (int); expected text"),
        ({"steps": True}, "steps is True (bool)"),
        (
            {"stages": [[128, 128], [256]]},
            "stages is [[128, 128], [256]]; expected a list of [height, width]",
        ),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({**recipe, **change}))
        one_line_error(["render", "--from-recipe", str(bad), "--quiet"], capsys, bad, named)


# -- point 7: output places, sidecars, checkpoints, prompts ------------------------------------------------


def test_an_unwritable_output_folder_is_refused_before_loading(capsys, no_loading):
    # /sys takes no new file even for root (a permission bit would not stop root).
    one_line_error(["render", "x", *FAST, "-o", "/sys/out.png"], capsys, "/sys", "cannot write")


def test_overwrite_onto_a_directory_is_refused_before_loading(tmp_path, capsys, no_loading):
    place = tmp_path / "out.png"
    place.mkdir()
    one_line_error(["render", "x", *FAST, "-o", str(place), "--overwrite"], capsys, place, "is a directory")


def test_no_image_stands_without_its_recipe(tmp_path, monkeypatch):
    from freescale.outputs import image_output
    from freescale.outputs.image_output import save_image

    pixels = np.zeros((8, 8, 3), np.uint8)
    out = tmp_path / "out.png"

    def disk_full(path, recipe):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_output, "write_sidecar", disk_full)
    with pytest.raises(OSError, match="No space"):
        save_image(pixels, str(out), recipe={"prompt": "a"})
    assert os.listdir(tmp_path) == []  # neither the image nor its recipe (nor a temporary)
    monkeypatch.undo()
    # The recipe is in place when the image is linked; a failed link puts the old recipe back.
    (tmp_path / "out.png.json").write_text('{"old": true}')
    import freescale.atomic_files as atomic_files

    real_link = os.link

    def link_fails(source, target):
        if target != str(out):
            return real_link(source, target)
        assert json.loads((tmp_path / "out.png.json").read_text()) == {"prompt": "new"}
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_files.os, "link", link_fails)
    with pytest.raises(OSError):
        save_image(pixels, str(out), recipe={"prompt": "new"})
    assert os.listdir(tmp_path) == ["out.png.json"]
    assert json.loads((tmp_path / "out.png.json").read_text()) == {"old": True}


def test_a_corrupt_checkpoint_is_named_and_the_one_before_is_used(tmp_path):
    from freescale.method.snapshots import CheckpointEvent
    from freescale.outputs.checkpoints import CheckpointDir

    ckpt = CheckpointDir(str(tmp_path))
    stage0 = torch.randn(1, 4, 16, 16)
    ckpt.save(CheckpointEvent(0, stage0))
    ckpt.save(CheckpointEvent(1, torch.randn(1, 4, 32, 32)))
    data = (tmp_path / "stage1.pt").read_bytes()
    (tmp_path / "stage1.pt").write_bytes(data[: len(data) // 2])
    warnings = []
    snapshot = ckpt.load(3, warnings.append)
    assert len(snapshot.finished) == 1 and torch.equal(snapshot.finished[0], stage0)
    assert len(warnings) == 1 and str(tmp_path / "stage1.pt") in warnings[0] and "corrupt" in warnings[0]
    (tmp_path / "stage1.pt").unlink()
    (tmp_path / "in-progress.pt").write_bytes(b"garbage")
    warnings.clear()
    snapshot = ckpt.load(3, warnings.append)
    assert len(snapshot.finished) == 1 and snapshot.latents is None
    assert len(warnings) == 1 and "in-progress.pt" in warnings[0]
    torch.save({"stage": 1, "step": "two", "latents": stage0}, tmp_path / "in-progress.pt")
    warnings.clear()
    assert ckpt.load(3, warnings.append).latents is None and "holds no freescale latents" in warnings[0]


def test_a_render_resumes_past_a_truncated_checkpoint_to_the_same_image(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    first = tmp_path / "first.png"
    assert cli.main(["render", "a red fox", *FAST, "-o", str(first), "--checkpoint-dir", str(ckpt)]) == 0
    data = (ckpt / "stage1.pt").read_bytes()
    (ckpt / "stage1.pt").write_bytes(data[:100])
    again = tmp_path / "again.png"
    capsys.readouterr()
    # The same render again with the same checkpoint directory continues from it (as --resume does).
    assert cli.main(["render", "a red fox", *FAST, "-o", str(again), "--checkpoint-dir", str(ckpt)]) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt / "stage1.pt") in err, err
    with Image.open(first) as a, Image.open(again) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_an_invalid_utf8_prompt_is_one_line_before_loading(tmp_path, capsys, no_loading):
    prompt = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python puts in sys.argv for these bytes
    one_line_error(
        ["render", prompt, *FAST, "-o", str(tmp_path / "o.png")], capsys, "not valid UTF-8", "0xe9"
    )
    preset = tmp_path / "p.yaml"
    preset.write_bytes(b"negative_prompt: caf\xe9\n")
    argv = ["render", "x", *FAST, "-o", str(tmp_path / "o.png"), "--preset", str(preset)]
    one_line_error(argv, capsys, preset, "not valid UTF-8")


def test_a_prompt_longer_than_the_text_encoder_reads_gets_one_warning(tiny_model, capsys):
    from freescale.models.conditioning import encode_conditioning

    encode_conditioning(tiny_model.pipe, "a short prompt", "blurry", 7.5, (128, 128))
    assert capsys.readouterr().err == ""
    encode_conditioning(tiny_model.pipe, "a lighthouse on a cliff " * 5, "blurry", 7.5, (128, 128))
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the prompt is 97 tokens but the text encoder reads 77" in err, err
