"""Choosing the engine for `pal run` (no ComfyUI needed here; the real one: test_comfy_engine.py)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from pal_core.cli import main
from pal_core.workflow import engines, run_workflow
from pal_core.workflow.engines import EngineUnavailable, choose_engine

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


class FakeEngine:
    """Stands for the comfyui engine plugin: finds ComfyUI at `folder`, records what it was asked to run."""

    def __init__(self, folder: Path | None):
        self.folder, self.jobs = folder, []

    def locate(self, explicit):
        return Path(explicit) if explicit is not None else self.folder

    def run(self, job):
        self.jobs.append(job)
        return "ran on comfyui"


@pytest.fixture
def no_comfyui(monkeypatch):
    monkeypatch.delenv(engines.COMFYUI_ENV, raising=False)
    engine = FakeEngine(None)
    monkeypatch.setattr(engines.plugins, "load_engine", lambda name: engine if name == "comfyui" else None)
    return engine


def test_auto_takes_comfyui_only_when_one_is_found(no_comfyui, tmp_path):
    assert choose_engine("auto") == ("builtin", None, None)
    assert choose_engine("auto", tmp_path) == ("comfyui", no_comfyui, tmp_path)
    assert choose_engine("builtin", tmp_path) == ("builtin", None, None)
    no_comfyui.folder = tmp_path / "found"
    assert choose_engine("auto") == ("comfyui", no_comfyui, tmp_path / "found")
    with pytest.raises(ValueError, match="one of auto, builtin, comfyui"):
        choose_engine("gpu")


def test_run_workflow_hands_the_job_to_the_engine(no_comfyui, tmp_path):
    workflow = WORKFLOWS / "Detect artifacts in your images.json"
    assert run_workflow(workflow, output_dir="o", overrides={"1.image": "x.png"}, engine="comfyui",
                        comfyui=tmp_path, models_dir="m", extra_model_paths=["e.yaml"]) == "ran on comfyui"
    (job,) = no_comfyui.jobs
    assert job.comfyui == tmp_path and job.base_dir == WORKFLOWS and job.workflow["nodes"]
    assert job.input_dir is None and job.input_folder_beside() == WORKFLOWS / "input"
    assert job.output_dir == Path("o").absolute() and job.models_dir == Path("m").absolute()
    assert job.extra_model_paths == [Path("e.yaml").absolute()] and job.overrides == {"1.image": "x.png"}
    with pytest.raises(ValueError, match="builtin engine"):
        run_workflow(workflow, engine="comfyui", comfyui=tmp_path, nodes={})


def test_comfyui_asked_for_but_not_found_is_exit_2(no_comfyui, capsys):
    assert main(["run", str(WORKFLOWS / "Detect artifacts in your images.json"), "--engine", "comfyui", "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "invalid"
    assert "pass --comfyui DIR" in captured.err and "COMFYUI_PATH" in captured.err


def test_without_the_engine_plugin_comfyui_cannot_be_chosen(monkeypatch, tmp_path):
    monkeypatch.setattr(engines.plugins, "load_engine", lambda name: None)
    assert choose_engine("auto", tmp_path) == ("builtin", None, None)
    with pytest.raises(EngineUnavailable, match="no installed package offers the comfyui engine"):
        choose_engine("comfyui", tmp_path)


def test_the_real_plugin_refuses_a_folder_that_is_not_comfyui(monkeypatch, tmp_path, capsys):
    assert main(["run", str(WORKFLOWS / "Detect artifacts in your images.json"), "--comfyui", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a ComfyUI folder" in capsys.readouterr().err


def test_a_stale_comfyui_path_does_not_stop_auto_and_is_named(monkeypatch, tmp_path, capsys):
    """Issue 25: a moved ComfyUI left in $COMFYUI_PATH: auto runs on the built-in runtime and says why."""
    monkeypatch.setenv(engines.COMFYUI_ENV, str(tmp_path / "moved"))
    assert main(["run", str(WORKFLOWS / "Detect artifacts in your images.json"), "--quiet",
                 "--output-dir", str(tmp_path / "out"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["engine"] == "builtin"
    assert f"$COMFYUI_PATH is {tmp_path / 'moved'}, which is not a ComfyUI folder" in captured.err
    assert "the built-in runtime ran this workflow" in captured.err
    assert main(["run", str(WORKFLOWS / "Detect artifacts in your images.json"), "--engine", "comfyui"]) == 2
    err = capsys.readouterr().err
    assert "$COMFYUI_PATH is" in err and "set it to the folder ComfyUI runs from" in err and "Traceback" not in err


def test_the_real_plugin_locates_comfyui(monkeypatch, tmp_path):
    from pal_nodes import comfy_engine
    monkeypatch.delenv(engines.COMFYUI_ENV, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    assert comfy_engine.locate() is None
    assert comfy_engine.locate(tmp_path / "given") == tmp_path / "given"
    monkeypatch.setenv(engines.COMFYUI_ENV, str(tmp_path / "env"))
    assert comfy_engine.locate() == tmp_path / "env"
    monkeypatch.delenv(engines.COMFYUI_ENV)
    fake = tmp_path / "ComfyUI"  # importable: its folder on sys.path
    (fake / "comfy").mkdir(parents=True)
    for name in ("execution.py", "nodes.py", "folder_paths.py"):
        (fake / name).write_text("raise ImportError('locate must not import ComfyUI')\n")
    monkeypatch.syspath_prepend(str(fake))
    assert comfy_engine.locate() == fake


def test_the_pack_does_not_import_an_importable_comfyui_that_is_not_running(monkeypatch, tmp_path):
    """Inside ComfyUI its modules are loaded before the pack; otherwise the pack stays headless, even when
    ComfyUI could be imported (importing it would set up its devices, which fails without a GPU)."""
    fake = tmp_path / "ComfyUI"
    (fake / "comfy").mkdir(parents=True)
    (fake / "comfy" / "__init__.py").write_text("")
    (fake / "comfy" / "model_management.py").write_text("raise RuntimeError('ComfyUI was imported')\n")
    (fake / "folder_paths.py").write_text("raise RuntimeError('ComfyUI was imported')\n")
    monkeypatch.syspath_prepend(str(fake))
    from pal_nodes import comfy_env
    try:
        reloaded = importlib.reload(comfy_env)
        assert not reloaded.in_comfyui()
        assert reloaded.sampler_names(["euler"], ["normal"]) == (["euler"], ["normal"])
    finally:
        monkeypatch.undo()
        importlib.reload(comfy_env)


def test_an_input_folder_beside_the_workflow_is_where_images_are_looked_for(tmp_path):
    from pal_core.workflow import default_input_dir
    assert default_input_dir(None) == Path.cwd()
    assert default_input_dir(tmp_path) == tmp_path
    (tmp_path / "input").mkdir()
    assert default_input_dir(tmp_path) == tmp_path / "input"


def test_an_api_twin_in_api_finds_the_images_of_its_ui_file(tmp_path):
    from pal_core.workflow import default_input_dir
    from pal_core.workflow.engines import EngineJob
    (tmp_path / "api").mkdir()
    assert default_input_dir(tmp_path / "api") == tmp_path / "api"  # no input/ anywhere: the file's folder
    (tmp_path / "input").mkdir()
    assert default_input_dir(tmp_path / "api") == tmp_path / "input"
    assert EngineJob({}, tmp_path / "api").input_folder_beside() == tmp_path / "input"
    (tmp_path / "other").mkdir()  # only api/ looks one folder up
    assert default_input_dir(tmp_path / "other") == tmp_path / "other"
    (tmp_path / "api" / "input").mkdir()  # its own input/ comes first
    assert default_input_dir(tmp_path / "api") == tmp_path / "api" / "input"
