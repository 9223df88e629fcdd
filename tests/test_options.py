"""The one option definition: RenderConfig, presets, resume, checkpoints, batch, the render and plan flags and
the sharding check all come from it, and a new option added there reaches all of them."""

import argparse
import dataclasses

import pytest

from freescale.cli import commands as cli
from freescale.cli import render_options
from freescale.config import options, presets, render_config
from freescale.config.options import COMMAND, SECTIONS, Option, Section
from freescale.config.sharding_check import BandGeometry, band_geometry_of, check_cfg_parallel, check_sharding
from freescale.errors import ConfigError
from freescale.models.model_source import ModelSource

# RenderConfig as recipes and checkpoints have stored it since before the option definition.
TODAYS_FIELDS = {
    "prompt": dataclasses.MISSING, "stages": dataclasses.MISSING, "native_size": dataclasses.MISSING,
    "negative_prompt": "blurry, ugly, duplicate, poorly drawn, deformed, mosaic", "model": "tiny",
    "model_config": None, "steps": 50, "guidance": 7.5, "seed": 0, "cosine_scale": 2.0,
    "cosine_scale_bg": 0.5, "dilate_tau": 35, "restart": 0.3, "fast_mode": False,
    "freeu": (1.1, 1.2, 0.6, 0.4), "blur": "3d",
    "image": None, "mask": None, "output": "freescale.png", "save_stages": False, "overwrite": False,
    "bit_depth": 8, "dpi": None, "pyramid": False, "device": None, "dtype": None,
}  # fmt: skip
# Fields added since, each with a default, so that older recipes and checkpoints still load.
TODAYS_FIELDS.update({
    "allow_pickle": False, "motion_adapter": None, "frames": None, "fps": None, "input": None,
    "upsample": "latent", "codec": None, "crf": None, "frame_size": None,
    "window": None, "window_stride": 4, "window_weights": "pyramid", "noise": "random", "chunk_frames": 64,
    "chunk_overlap": 8,
})  # fmt: skip
# The exact image size of any --size, --print or --aspect (tests/test_print_sizes.py).
TODAYS_FIELDS.update({"fit": "crop", "image_size": None})
# --scheduler (tests/test_samplers.py): None is the model's own.
TODAYS_FIELDS.update({"scheduler": None})
# --lora (tests/test_lora.py): no LoRA fused.
TODAYS_FIELDS.update({"lora": ()})
# `freescale upscale IMAGE` (tests/test_upscale.py): no input image, no caption model.
TODAYS_FIELDS.update({"input_image": None, "caption_model": None})
OUTPUT_KEYS = {"output", "overwrite", "save_stages", "bit_depth", "dpi", "pyramid"}


def render_parser(sections=SECTIONS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    render_options.add_render_options(parser, sections)
    return parser


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings} - {"-h", "--help"}


def test_render_config_fields_are_the_definitions_and_todays():
    fields = dataclasses.fields(render_config.RenderConfig)
    assert [f.name for f in fields] == [o.name for o in options.field_options()]
    assert {f.name: f.default for f in fields} == TODAYS_FIELDS
    assert dataclasses.is_dataclass(render_config.RenderConfig)
    config = render_config.build_config({"prompt": "a fox"}, 128)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 3
    assert config.restart_step == 15 and config.replace(steps=10).restart_step == 3


def test_key_lists_are_derived_from_the_sections():
    settings = set(TODAYS_FIELDS) - {"native_size", "frame_size"}
    settings |= {"size", "scale", "stage_rule", "strength"}
    settings |= {"print_size", "landscape", "aspect"}
    # Neither a preset nor a recipe from someone else may turn on pickle loading.
    assert presets.PRESET_KEYS == settings - {"overwrite", "allow_pickle"} == options.preset_keys()
    assert render_config.PRESET_KEYS is presets.PRESET_KEYS
    assert set(render_options.RENDER_KEYS) == settings
    assert set(render_options.RESUME_KEYS) == OUTPUT_KEYS
    from freescale.outputs.checkpoints import _OUTPUT_FIELDS
    from freescale.rendering.batch import MODEL_KEYS

    assert set(_OUTPUT_FIELDS) == OUTPUT_KEYS
    assert MODEL_KEYS == ("model", "model_config", "device", "dtype", "allow_pickle", "lora")
    assert MODEL_KEYS == options.section_keys("model")
    assert set(options.number_fields()) == {
        "steps", "seed", "dilate_tau", "bit_depth", "dpi", "guidance", "cosine_scale", "cosine_scale_bg",
        "restart", "frames", "fps", "crf", "window", "window_stride", "chunk_frames", "chunk_overlap",
    }  # fmt: skip


def test_render_flags_are_the_definitions():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    render, video = commands["render"], commands["video"]
    everything = {flag for o in options.all_options() for flag in o.cli_flags if flag.startswith("-")}
    everything |= {o.off_flag[0] for o in options.all_options() if o.off_flag}
    video_flags = {flag for o in options.section("video").options for flag in o.cli_flags}
    assert video_flags == {"--motion-adapter", "--frames", "--fps", "--input", "--strength", "--upsample",
                           "--window", "--window-stride", "--window-weights", "--noise", "--chunk-frames",
                           "--chunk-overlap", "--codec", "--crf"}  # fmt: skip
    expected = everything - video_flags
    image_flags = {flag for o in options.section("image_size").options for flag in o.cli_flags}
    assert image_flags == {"--print", "--landscape", "--aspect", "--fit"}
    upscale_flags = {flag for o in options.section("upscale").options for flag in o.cli_flags}
    assert upscale_flags == {"input_image", "--caption-model"}
    expected -= upscale_flags
    assert flags_of(render) == expected and flags_of(video) == everything - image_flags - upscale_flags
    upscale = flags_of(commands["upscale"])
    assert {"--caption-model", "--strength", "--print", "--fit", "--scale"} <= upscale
    assert not upscale & {"--stages", "--aspect", "--image", "--restart", "--input"}
    assert expected >= {
        "--model", "--model-config", "--device", "--dtype", "--size", "--scale", "--stages", "--stage-rule",
        "--steps", "--guidance", "--seed", "--negative-prompt", "--cosine-scale", "--cosine-scale-bg",
        "--dilate-tau", "--restart", "--fast-mode", "--no-freeu", "--freeu", "--blur", "--image", "--mask",
        "-o", "--output", "--save-stages", "--overwrite", "--bit-depth", "--dpi", "--pyramid", "--quiet",
        "--checkpoint-dir", "--checkpoint-every", "--resume", "--workers", "--address", "--strategy",
        "--cfg-parallel", "--max-retries", "--from-recipe", "--preset",
    }  # fmt: skip
    actions = {a.dest: a for a in render._actions}
    assert actions["strategy"].choices == ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
    assert actions["dtype"].choices == ["fp32", "fp16", "bf16"] and actions["bit_depth"].choices == [8, 16]
    for dest in ("model", "steps", "guidance", "fast_mode", "save_stages", "pyramid", "freeu", "output"):
        assert actions[dest].default is None, dest  # so a preset or RenderConfig's default fills it in
    assert "(default: 50)" in actions["steps"].help and "(default: tiny)" in actions["model"].help
    assert "model family" in next(a for a in render._actions if "--no-freeu" in a.option_strings).help


def test_render_flag_behaviour():
    parser = cli.build_parser()
    args = parser.parse_args(["render", "a fox"])
    assert (args.checkpoint_every, args.max_retries, args.strategy, args.workers) == (5, 2, "PACK", None)
    assert (args.freeu, args.fast_mode, args.cfg_parallel, args.quiet) == (None, None, False, False)
    assert args.prompt == "a fox"
    assert parser.parse_args(["render", "--no-freeu"]).freeu is False
    assert parser.parse_args(["render", "--freeu", "1,2,3,4"]).freeu == "1,2,3,4"
    args = parser.parse_args(
        ["render", "x", "--fast-mode", "-o", "o.tif", "--bit-depth", "16", "--workers", "4"]
    )
    assert (args.fast_mode, args.output, args.bit_depth, args.workers) == (True, "o.tif", 16, 4)
    with pytest.raises(SystemExit):
        parser.parse_args(["render", "x", "--strategy", "NEAR"])


def test_plan_flags_mirror_the_render_options():
    plan = cli.build_parser()._subparsers._group_actions[0].choices["plan"]
    mirrored = ("model", "model_config", "size", "scale", "stages", "stage_rule", "workers", "fast_mode",
                "cfg_parallel", "steps", "restart")  # fmt: skip
    assert {f for name in mirrored for f in options.option(name).cli_flags} <= flags_of(plan)
    args = plan.parse_args([])
    assert (args.model, args.workers, args.steps, args.restart, args.fast_mode, args.stage_rule) == (
        "sdxl",
        1,
        50,
        0.3,
        False,
        "double",
    )
    from freescale.planning.plan import PlanRequest

    request = PlanRequest(((1024, 1024),))
    assert (request.steps, request.restart, request.dilate_tau, request.guidance, request.freeu) == (
        50, 0.3, 35, 7.5, True
    )  # fmt: skip


def test_a_new_option_reaches_presets_the_cli_and_render_config():
    grain = Option("grain", "film grain strength", type=int, default=16)
    stride = Option("grain_stride", "frames between grain draws", type=int, default=4, preset=False)
    film = Section("film", "film grain", (grain, stride))
    sections = SECTIONS + (film,)
    assert "grain" in options.preset_keys(sections)
    assert "grain_stride" not in options.preset_keys(sections)
    assert options.section_keys("film", sections) == ("grain", "grain_stride")
    assert options.number_fields(sections)["grain"] is int
    parser = render_parser(sections)
    assert {"--grain", "--grain-stride"} <= flags_of(parser)
    assert parser.parse_args(["x", "--grain", "24"]).grain == 24 and parser.parse_args(["x"]).grain is None
    cls = render_config.config_class(sections)
    config = cls(prompt="a fox", stages=((128, 128),), native_size=128, grain=24)
    assert config.grain == 24 and cls(prompt="a", stages=((128, 128),), native_size=128).grain_stride == 4
    # A command option is a flag only: not a preset key, not a field.
    sections = SECTIONS + (Section("temporal", "t", (Option("keyframes", "every Nth frame", role=COMMAND),)),)
    assert "keyframes" not in options.preset_keys(sections)
    assert "keyframes" not in [o.name for o in options.field_options(sections)]
    assert "--keyframes" in flags_of(render_parser(sections))


def test_band_geometry_comes_from_the_model(tmp_path):
    assert band_geometry_of(ModelSource("tiny", None, None)) == BandGeometry(4, 8)
    assert band_geometry_of(ModelSource("tiny", None, None, name="tiny-sd15")) == BandGeometry(8, 8)
    import json

    for component, config in (
        ("unet", {"down_block_types": ["D"] * 4}),
        ("vae", {"block_out_channels": [1] * 4}),
    ):
        (tmp_path / component).mkdir()
        (tmp_path / component / "config.json").write_text(json.dumps(config))
    assert band_geometry_of(ModelSource("directory", str(tmp_path), None)).unit_px == 64


def test_one_sharding_check_with_the_models_alignment():
    stages = ((128, 128), (256, 256))
    check_sharding(stages, 8, False, 7.5, 4, 8)  # SDXL: 256 px = 8 bands of 4 latent rows
    with pytest.raises(ConfigError, match="only 8 bands of 32 px rows to share; use at most 8 workers"):
        check_sharding(stages, 9, False, 7.5, 4, 8)
    with pytest.raises(ConfigError, match="only 4 bands of 64 px rows to share; use at most 8 workers"):
        check_sharding(stages, 10, True, 7.5, 8, 8)  # SD1.5: bands of 8 latent rows, two CFG groups
    with pytest.raises(ConfigError, match="--workers 0 must be at least 1"):
        check_sharding(stages, 0, False, 7.5, 4, 8)
    with pytest.raises(ConfigError, match=r"--guidance > 1 \(got 1.0\)"):
        check_sharding(stages, 2, True, 1.0, 4, 8)
    with pytest.raises(ConfigError, match="multiple of 64 px"):
        check_sharding(((96, 128), (192, 256)), 1, False, 7.5, 8, 8)


def test_render_plan_and_cfg_split_give_the_same_message(capsys):
    odd = "--cfg-parallel needs an even number of workers, got --workers 3"
    with pytest.raises(ConfigError) as raised:
        check_cfg_parallel(3)
    assert str(raised.value) == odd
    assert cli.main(["plan", "--workers", "3", "--cfg-parallel"]) == 2
    assert odd in capsys.readouterr().err
    assert cli.main(["render", "a fox", "--workers", "3", "--cfg-parallel", "--steps", "1"]) == 2
    assert odd in capsys.readouterr().err
    from freescale.cluster.sharding.cfg_split import split_for_cfg
    from freescale.cluster.sharding.shard_group import ShardGroup

    with pytest.raises(ConfigError) as raised:
        split_for_cfg(ShardGroup(rank=0, world=3, group=None, ranks=(0, 1, 2)))
    assert str(raised.value) == odd
