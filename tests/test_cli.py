"""The `freescale` command end to end: bad input exits 2 before loading, renders write files."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from freescale.cli import commands as cli

FAST = ["--steps", "3", "--scale", "2"]


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr("freescale.models.loading.load_model", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["x", "--size", "1000x0"], "--size 1000x0 must be positive on each side"),
        (["x", "--stages", "128,200"], "200x200 is not a multiple of 64"),
        (["x", "--stages", "256,128"], "128x128 is not larger than the previous stage 256x256"),
        (["x", "--steps", "0"], "--steps 0 must be at least 1"),
        (["x", "--preset", "huge"], "--preset 'huge' is neither a file nor one of"),
        (["x", "--model", "/no/model"], "'/no/model' does not exist"),
        (["x", "-o", "/no/dir/out.png"], "directory /no/dir does not exist"),
        (["x", "-o", "out.webp"], "'.webp'; allowed"),
        (["x", "--image", "/no/base.png"], "--image /no/base.png: no such file"),
        ([], "no prompt"),
    ],
)
def test_bad_input_exits_2_before_loading(argv, message, no_loading, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("freescale: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_unknown_preset_key_exits_2(no_loading, capsys, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("stepz: 3\n")
    assert cli.main(["render", "x", "--preset", str(preset)]) == 2
    assert "unknown key 'stepz'" in capsys.readouterr().err


def test_malformed_model_paths_exit_2(no_loading, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    for model, message in [(tmp_path / "empty", "model_index.json"), (bad, "safetensors")]:
        assert cli.main(["render", "x", "--model", str(model)]) == 2
        assert message in capsys.readouterr().err


def test_render_writes_png_with_recipe(tmp_path, capsys):
    out = tmp_path / "fox.png"
    assert cli.main(["render", "a red fox", *FAST, "-o", str(out), "--save-stages", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    with Image.open(out) as image:
        assert image.size == (256, 256)
        recipe = json.loads(image.text["freescale-recipe"])
    assert (
        recipe["prompt"] == "a red fox"
        and recipe["steps"] == 3
        and recipe["stages"] == [[128, 128], [256, 256]]
    )
    assert (tmp_path / "fox.stage0-128x128.png").exists()
    # A second run refuses to overwrite, and leaves the first image alone.
    before = out.read_bytes()
    assert cli.main(["render", "a red fox", *FAST, "-o", str(out), "--quiet"]) == 2
    assert out.read_bytes() == before
    written = ["fox.png", "fox.png.json", "fox.stage0-128x128.png", "fox.stage0-128x128.png.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == written


def test_saved_test_model_renders_the_same_image_as_tiny(tmp_path):
    model_dir = tmp_path / "m"
    assert cli.main(["make-test-model", str(model_dir)]) == 0
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert cli.main(["render", "a red fox", *FAST, "--seed", "5", "-o", str(a), "--quiet"]) == 0
    argv = ["render", "a red fox", *FAST, "--seed", "5", "-o", str(b), "--quiet", "--model", str(model_dir)]
    assert cli.main(argv) == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_console_script_help_documents_defaults():
    result = subprocess.run(
        [sys.executable, "-m", "freescale.cli", "render", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for text in [
        "--cosine-scale",
        "(default: 2.0)",
        "--dilate-tau",
        "(default: 35)",
        "--fast-mode",
        "--no-freeu",
        "--mask",
        "--image",
        "--save-stages",
        "(default: 50)",
        "--stages",
    ]:
        assert text in result.stdout


def test_python_api_renders_every_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import freescale

    config = freescale.build_config({"prompt": "a red fox", "scale": 4, "steps": 3}, native_size=128)
    images = freescale.render(config)
    assert [image.size for image in images] == [(128, 128), (256, 256), (512, 512)]
    assert list(tmp_path.iterdir()) == []  # the Python API writes nothing
