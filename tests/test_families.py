"""Model families: their FreeU defaults, and how a model's family is read from config files or a
safetensors header alone, for every kind of model source."""

import json
import struct
import subprocess
import sys

import pytest

from freescale.cli import main
from freescale.errors import ConfigError
from freescale.models.families import (
    BUILTIN_MODELS,
    FAMILIES,
    family_named,
    family_of_source,
)
from freescale.models.model_source import ModelSource, resolve_model_source


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each built-in family's tiny model saved by the CLI, with its original-layout single file."""
    dirs = {}
    for family in ("sdxl", "sd15"):
        directory = tmp_path_factory.mktemp(family) / "model"
        assert main(["make-test-model", str(directory), "--family", family, "--single-file"]) == 0
        dirs[family] = directory
    return dirs


def _write_header_only(path, names: list[str]) -> None:
    header = {name: {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for name in names}
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body)


def _write_pipeline_dir(directory, class_name: str, configs: dict[str, dict]) -> None:
    directory.mkdir(parents=True)
    (directory / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    for component, config in configs.items():
        (directory / component).mkdir()
        (directory / component / "config.json").write_text(json.dumps(config))


def test_families_carry_the_freeu_authors_defaults():
    assert FAMILIES["sdxl"].freeu_default == (1.1, 1.2, 0.6, 0.4)
    assert FAMILIES["sd15"].freeu_default == (1.5, 1.6, 0.9, 0.2)
    assert FAMILIES["sd21"].freeu_default == (1.4, 1.6, 0.9, 0.2)
    assert [FAMILIES[n].text_encoders for n in ("sdxl", "sd15", "sd21")] == [2, 1, 1]
    assert {name: f.name for name, f in BUILTIN_MODELS.items()} == {"tiny": "sdxl", "tiny-sd15": "sd15"}
    assert family_named("sd21") is FAMILIES["sd21"]
    with pytest.raises(ConfigError, match=r"'sd3'.*sdxl, sd15, sd21"):
        family_named("sd3")


def test_light_modules_import_no_heavy_library():
    code = (
        "import sys\n"
        "import freescale.models.families, freescale.models.model_source\n"
        "import freescale.models.native_resolution\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')]\n"
        "assert not heavy, heavy[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_builtin_models_families():
    assert family_of_source(resolve_model_source("tiny")).name == "sdxl"
    assert family_of_source(resolve_model_source("tiny-sd15")).name == "sd15"
    # A source built before built-ins had names is the SDXL tiny model.
    assert family_of_source(ModelSource(kind="tiny", path=None, config_dir=None)).name == "sdxl"
    with pytest.raises(ConfigError, match="'tiny-sd9'"):
        family_of_source(ModelSource(kind="tiny", path=None, config_dir=None, name="tiny-sd9"))


def test_saved_directories_and_single_files(saved):
    for family, directory in saved.items():
        assert family_of_source(resolve_model_source(str(directory))).name == family
        single = resolve_model_source(str(directory / f"tiny_{family}.safetensors"))
        assert single.kind == "single_file" and single.config_dir == str(directory)
        assert family_of_source(single).name == family


def test_sd2_is_told_from_sd1_by_its_text_width(tmp_path):
    unet_sd2 = {"sample_size": 96, "cross_attention_dim": 1024}
    _write_pipeline_dir(tmp_path / "sd21", "StableDiffusionPipeline", {"unet": unet_sd2})
    _write_pipeline_dir(
        tmp_path / "sd21_text", "StableDiffusionPipeline", {"text_encoder": {"hidden_size": 1024}}
    )
    _write_pipeline_dir(tmp_path / "sd15", "StableDiffusionPipeline", {"unet": {"cross_attention_dim": 768}})
    # Sources made by hand: these directories hold only what family detection reads (resolve_model_source
    # would refuse them for their missing components and weights).
    for name, family in (("sd21", "sd21"), ("sd21_text", "sd21"), ("sd15", "sd15")):
        source = ModelSource(kind="directory", path=str(tmp_path / name), config_dir=None)
        assert family_of_source(source).name == family
    sd2_file = tmp_path / "sd21" / "v2.safetensors"
    _write_header_only(
        sd2_file, ["model.diffusion_model.out.2.weight", "cond_stage_model.model.ln_final.weight"]
    )
    single = ModelSource(kind="single_file", path=str(sd2_file), config_dir=str(tmp_path / "sd21"))
    assert family_of_source(single).name == "sd21"


def test_unsupported_models_name_the_families(tmp_path, saved):
    _write_pipeline_dir(tmp_path / "kandinsky", "KandinskyPipeline", {})
    with pytest.raises(ConfigError, match=r"'KandinskyPipeline'.*sdxl, sd15, sd21"):
        resolve_model_source(str(tmp_path / "kandinsky"))
    no_text = tmp_path / "kandinsky" / "unet_only.safetensors"
    _write_header_only(no_text, ["model.diffusion_model.out.2.weight"])
    with pytest.raises(ConfigError, match="unet_only.safetensors.*known family"):
        family_of_source(ModelSource(kind="single_file", path=str(no_text), config_dir=None))
    # An SD1.5 checkpoint with SDXL configs would load garbage: refused before loading.
    sd15_file = str(saved["sd15"] / "tiny_sd15.safetensors")
    with pytest.raises(ConfigError, match=r"sd15 checkpoint.*is sdxl") as err:
        resolve_model_source(sd15_file, str(saved["sdxl"]))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="sdxl, sd15, sd21"):
        resolve_model_source(str(tmp_path / "missing"))
