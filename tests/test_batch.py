"""`freescale batch`: warm model, outputs as they finish, reruns skip finished items, failures reported."""

import pytest

from freescale.cli import commands as cli
from freescale.models import loading as model_loading
from freescale.rendering import renderer as driver

JOBS = """
defaults: {scale: 2, steps: 3}
jobs:
  - {prompt: "a red fox", output: fox.png}
  - {prompt: "a bad one", output: bad.png, steps: 0}
  - {prompt: "a blue bird", output: bird.png, seed: 4}
"""


@pytest.fixture
def load_counter(monkeypatch):
    calls = []
    real = model_loading.load_model

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_loading, "load_model", counting)
    return calls


def test_batch_renders_reports_and_skips_on_rerun(tmp_path, capsys, load_counter):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS)
    assert cli.main(["batch", str(jobs), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "batch: 2 done, 0 skipped, 1 failed" in err and "--steps 0 must be at least 1" in err
    assert (tmp_path / "fox.png").exists() and (tmp_path / "bird.png").exists()
    assert not (tmp_path / "bad.png").exists()
    assert len(load_counter) == 1  # one warm model for the whole batch
    before = (tmp_path / "fox.png").read_bytes()
    assert cli.main(["batch", str(jobs), "--quiet"]) == 1
    assert "batch: 0 done, 2 skipped, 1 failed" in capsys.readouterr().err
    assert (tmp_path / "fox.png").read_bytes() == before


def test_a_failing_item_does_not_stop_the_others(tmp_path, capsys, monkeypatch):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(JOBS.replace("steps: 0", "steps: 3"))
    real = driver.Renderer.render_to_files

    def flaky(self, config):
        if config.output.endswith("bad.png"):
            raise RuntimeError("out of memory on item 1")
        return real(self, config)

    monkeypatch.setattr(driver.Renderer, "render_to_files", flaky)
    assert cli.main(["batch", str(jobs), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "batch: 2 done, 0 skipped, 1 failed" in err and "RuntimeError: out of memory on item 1" in err
    assert (tmp_path / "bird.png").exists()


def test_prompts_file(tmp_path, capsys):
    prompts = tmp_path / "posters.txt"
    prompts.write_text("# comment\na red fox\n\na blue bird\n")
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["batch", str(prompts), "--output-dir", str(out), "--quiet"]) == 0
    assert "batch: 2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == [
        "posters-0000.png",
        "posters-0001.png",
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("jobs:\n  - {prompt: a, colour: red}\n", "batch job 0: unknown key 'colour'"),
        ("jobs:\n  - {prompt: a}\n  - {prompt: b, model: /elsewhere}\n", "must share model"),
        ("jobs: 3\n", "'jobs' must be a list"),
        ("jobs: []\n", "has no jobs"),
    ],
)
def test_bad_batch_files_exit_2(text, message, tmp_path, capsys):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(text)
    assert cli.main(["batch", str(jobs)]) == 2
    assert message in capsys.readouterr().err


def test_a_stale_sidecar_is_replaced_with_its_new_image(tmp_path, capsys):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text('jobs:\n  - {prompt: "a red fox", output: fox.png, scale: 2, steps: 2}\n')
    (tmp_path / "fox.png.json").write_text('{"left": "by a crash between image and recipe"}')
    assert cli.main(["batch", str(jobs), "--quiet"]) == 0
    assert '"prompt": "a red fox"' in (tmp_path / "fox.png.json").read_text()
