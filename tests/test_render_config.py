"""RenderConfig validation and preset handling: every bad input names itself (exit code 2 in the CLI)."""

import pytest
from PIL import Image

from freescale.config.render_config import (
    build_config,
    check_outputs_free,
    load_preset,
    parse_size,
    preset_names,
    resolve_stages,
)
from freescale.errors import ConfigError


def test_sizes_are_width_by_height():
    assert parse_size("4096x2048") == (2048, 4096)
    assert parse_size("1024") == (1024, 1024)
    with pytest.raises(ConfigError, match="'big'"):
        parse_size("big")


def test_default_stages_double_up_to_the_target():
    assert resolve_stages(1024, size="4096x4096") == ((1024, 1024), (2048, 2048), (4096, 4096))
    assert resolve_stages(1024, size="3072x3072") == ((1024, 1024), (2048, 2048), (3072, 3072))
    assert resolve_stages(1024, size="8192x8192", stage_rule="direct") == ((1024, 1024), (8192, 8192))
    assert resolve_stages(512, scale=4) == ((512, 512), (1024, 1024), (2048, 2048))
    # A 2:1 target keeps its aspect ratio from the base on.
    assert resolve_stages(1024, size="4096x2048") == ((512, 1024), (1024, 2048), (2048, 4096))
    assert resolve_stages(1024, stages="1024,1536,2048") == ((1024, 1024), (1536, 1536), (2048, 2048))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"size": "3000x300"}, "--size 3000x300 is beyond the model's trained shapes"),
        ({"stages": "1024,2000"}, "2000x2000 is not a multiple of 64"),
        ({"stages": "1024,2048,2048"}, "not larger than the previous stage 2048x2048"),
        ({"stages": "1024,2048,1536"}, "1536x1536 is not larger"),
        ({"stages": "512,768"}, "smaller than the model's native 1024"),
        ({"steps": 0}, "--steps 0 must be at least 1"),
        ({"steps": "many"}, "--steps 'many' is not a int"),
        ({"guidance": -1}, "--guidance -1.0 must be >= 0"),
        ({"restart": 1.0}, "--restart 1.0 must be in"),
        ({"dilate_tau": -2}, "--dilate-tau -2"),
        ({"freeu": "1,2,3"}, "four numbers"),
        ({"output": "out.bmp"}, "'.bmp'; allowed"),
        ({"output": "/no/such/dir/out.png"}, "directory /no/such/dir does not exist"),
        ({"image": "/no/such.png"}, "--image /no/such.png: no such file"),
        ({"mask": "/no/mask.png"}, "--mask /no/mask.png: no such file"),
        ({"stage_rule": "triple"}, "--stage-rule 'triple'"),
        ({"prompt": "  "}, "the prompt is empty"),
    ],
)
def test_bad_values_are_named(values, message, tmp_path):
    base = {"prompt": "a fox", "output": str(tmp_path / "out.png"), "size": "2048x2048"}
    with pytest.raises(ConfigError) as info:
        build_config({**base, **values}, native_size=1024)
    assert message in str(info.value)


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    config = build_config({"prompt": "a", "output": str(out)}, 1024)
    with pytest.raises(ConfigError, match="--overwrite"):
        check_outputs_free(config, [])
    check_outputs_free(config.replace(overwrite=True), [])
    (tmp_path / "other.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="other.png' already exists"):
        check_outputs_free(build_config({"prompt": "a", "output": str(tmp_path / "new.png")}, 1024),
                           [str(tmp_path / "other.png")])  # fmt: skip


def test_base_image_must_match_first_stage(tmp_path):
    Image.new("RGB", (256, 256)).save(tmp_path / "base.png")
    values = {"prompt": "a", "output": str(tmp_path / "o.png"), "image": str(tmp_path / "base.png")}
    with pytest.raises(ConfigError, match="is 256x256 but the first stage is 1024x1024"):
        build_config({**values, "size": "2048x2048"}, 1024)
    assert build_config({**values, "stages": "256,1024"}, 1024).stages[0] == (256, 256)


def test_presets_load_and_override(tmp_path):
    assert {"2k", "4k", "8k", "turbo", "detail"} <= set(preset_names())
    turbo = load_preset("turbo")
    config = build_config({**turbo, "prompt": "a", "steps": 8, "output": str(tmp_path / "o.png")}, 512)
    assert config.stages == ((512, 512), (1024, 1024), (2048, 2048))
    assert config.steps == 8 and config.guidance == 0.0 and config.restart_step == 4
    eight = build_config({**load_preset("8k"), "prompt": "a", "output": str(tmp_path / "o.png")}, 1024)
    assert eight.stages[-1] == (8192, 8192) and eight.cosine_scale == 1.0


def test_unknown_preset_key_is_named(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("steps: 10\ncosine: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'cosine' in preset"):
        load_preset(str(path))
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_preset(str(path))


def test_freeu_defaults_to_the_model_familys_values():
    from freescale.models.families import family_named

    sd15 = family_named("sd15")
    assert build_config({"prompt": "a"}, 128).freeu == (1.1, 1.2, 0.6, 0.4)  # no family: SDXL's, as before
    assert build_config({"prompt": "a"}, 128, family=sd15).freeu == (1.5, 1.6, 0.9, 0.2)
    assert build_config({"prompt": "a", "freeu": True}, 128, family=family_named("sd21")).freeu == (
        1.4, 1.6, 0.9, 0.2
    )  # fmt: skip
    assert build_config({"prompt": "a", "freeu": "1,2,3,4"}, 128, family=sd15).freeu == (1.0, 2.0, 3.0, 4.0)
    assert build_config({"prompt": "a", "freeu": False}, 128, family=sd15).freeu is None
    assert build_config({"prompt": "a", "freeu": "off"}, 128, family=sd15).freeu is None


def test_the_cli_takes_freeu_from_the_detected_family():
    from freescale.cli import commands as cli
    from freescale.cli.render_options import config_from_args

    parser = cli.build_parser()
    config, _ = config_from_args(parser.parse_args(["render", "a", "--model", "tiny-sd15"]))
    assert config.freeu == (1.5, 1.6, 0.9, 0.2)
    config, _ = config_from_args(parser.parse_args(["render", "a"]))
    assert config.freeu == (1.1, 1.2, 0.6, 0.4)


# ---- sizes the engine supports (issue 15.5) ----


@pytest.mark.parametrize("stages", ["128,1048576", "128,65536x65600", "128x131072"])
def test_a_stage_past_the_largest_side_is_named(stages):
    with pytest.raises(ConfigError, match=r"stage size \d+x\d+ is larger than the 65536 px a side"):
        build_config({"prompt": "x", "stages": stages}, 128)


def test_the_largest_side_is_allowed():
    config = build_config({"prompt": "x", "stages": "128,65536"}, 128)
    assert config.stages[-1] == (65536, 65536)


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for bad input")

    monkeypatch.setattr("freescale.models.loading.load_model", refuse)


@pytest.mark.parametrize("from_recipe", [False, True])
def test_a_huge_stage_exits_2_at_once(from_recipe, tmp_path, no_loading, capsys, monkeypatch):
    import json
    import time

    from freescale import cli

    monkeypatch.chdir(tmp_path)
    argv = ["render", "x", "--stages", "128,1048576"]
    if from_recipe:
        recipe = tmp_path / "huge.png.json"
        recipe.write_text(json.dumps({"prompt": "x", "stages": [[128, 128], [1048576, 1048576]]}))
        argv = ["render", "--from-recipe", str(recipe)]
    start = time.monotonic()
    assert cli.main(argv) == 2
    assert time.monotonic() - start < 5  # before: the preflight enumerated windows into tens of GB
    err = capsys.readouterr().err.strip()
    assert err == "freescale: error: stage size 1048576x1048576 is larger than the 65536 px a side the " + (
        "renderer supports"
    )
