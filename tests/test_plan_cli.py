"""`freescale plan` on the command line, and the render's preflight memory check."""

import json

from freescale.cli import commands as cli
from freescale.planning import device_memory
from freescale.planning.device_memory import WorkerDevice


def test_plan_prints_each_stage_and_the_sharding(capsys):
    assert cli.main(["plan", "--size", "8192x8192", "--workers", "8", "--link", "pcie"]) == 0
    out = capsys.readouterr().out
    assert (
        "8192x8192" in out and "link pcie" in out and "sharding: stage 3's 1024 latent rows in 8 bands" in out
    )


def test_plan_json_has_every_stage(capsys):
    assert cli.main(["plan", "--scale", "4", "--workers", "2", "--fast-mode", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [stage["size"] for stage in plan["stages"]] == [[1024, 1024], [2048, 2048], [4096, 4096]]


def test_plan_checks_a_device_size(capsys):
    assert cli.main(["plan", "--size", "8192x8192", "--device-memory", "24"]) == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and "--workers 2" in err
    assert cli.main(["plan", "--size", "8192x8192", "--workers", "2", "--device-memory", "24"]) == 0
    assert "fits devices of 24 GiB" in capsys.readouterr().out


def test_plan_bad_input_exits_2(capsys):
    assert cli.main(["plan", "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err
    assert cli.main(["plan", "--size", "1000x100"]) == 2  # beyond the trained shapes
    assert cli.main(["plan", "--workers", "3", "--cfg-parallel"]) == 2
    assert cli.main(["plan", "--device-memory", "-1"]) == 2


def test_render_refuses_before_loading_when_the_device_is_too_small(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(device_memory, "local_device", lambda device=None: WorkerDevice("cpu", 2**20, 1))
    out = tmp_path / "o.png"
    assert cli.main(["render", "a fox", "--scale", "4", "--steps", "2", "-o", str(out)]) == 2
    assert "the render does not fit" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []
