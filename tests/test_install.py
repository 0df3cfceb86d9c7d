"""Every way the project is installed finds its code, its shipped model and its example workflows:
a clone in ComfyUI's custom_nodes/ (nothing pip-installed but requirements.txt), `pip install -e .`,
and a wheel (`pip install .`). The real ComfyUI is in test_comfyui_host.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from comfy_host import ROOT, pack_files
from pal_core import available_models
from pal_core.hub import resources

EXAMPLE_IMAGE = "dog_sdxl_turbo.jpg"
DETECT_EXAMPLE = "Detect artifacts in your images"


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def test_requirements_txt_lists_the_project_dependencies():
    """ComfyUI-Manager and the registry install requirements.txt; pip install uses pyproject: they agree."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert requirement_lines(ROOT / "requirements.txt") == project["dependencies"]


def test_registry_metadata():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, comfy = config["project"], config["tool"]["comfy"]
    assert re.fullmatch(r"https://\S+", project["urls"]["Repository"])
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["Icon"] == "" or (ROOT / comfy["Icon"]).is_file() or comfy["Icon"].startswith("https://")
    for folder in comfy["includes"]:
        assert (ROOT / folder).is_dir(), folder
    extras = project["optional-dependencies"]
    itself = [re.fullmatch(r"pal-nodes\[(.*)\]", r) for r in extras["test"]]
    pulled = {e.strip() for m in itself if m for e in m.group(1).split(",")}
    assert pulled == set(extras) - {"test"}, "the test extra installs every other extra: no test skips for a package"


def test_editable_install_finds_the_checkout_data():
    assert (ROOT / "weights").resolve() in [d.resolve() for d in resources.weights_dirs()]
    assert resources.examples_dir().resolve() == (ROOT / "workflows").resolve()
    assert "pal_lite" in available_models()


CLONE_IMPORT = r"""
import importlib.util, json, sys
from pathlib import Path
# No installed pal_core may help: drop setuptools' editable-install finders.
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "").lower()]
path_before = list(sys.path)
folder = Path(sys.argv[1])
name = str(folder).replace(".", "_x_")  # what ComfyUI 0.3.64's load_custom_node names the module
spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
import pal_core
print(json.dumps({
    "classes": sorted(module.NODE_CLASS_MAPPINGS),
    "pal_core": pal_core.__file__,
    "models": pal_core.available_models(),
    "default": str(pal_core.hub.loading.resolve_source(None)),
    "sys_path_changed": sys.path != path_before,
    "nodes_module": "nodes" in sys.modules,
}))
"""


def test_a_clone_in_custom_nodes_imports_with_pal_core_from_its_own_folder(tmp_path):
    """ComfyUI imports custom_nodes/<any name>/__init__.py; with only requirements.txt installed, the
    pack must find pal_core and the shipped model in its own folder, without touching sys.path."""
    clone = tmp_path / "custom_nodes" / "ComfyUI-PAL.nodes-main"
    for name in pack_files(ROOT):
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        (clone / name).write_bytes((ROOT / name).read_bytes())
    result = subprocess.run([sys.executable, "-c", CLONE_IMPORT, str(clone)], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.splitlines()[-1])
    from pal_nodes import NODE_CLASS_MAPPINGS
    assert seen["classes"] == sorted(NODE_CLASS_MAPPINGS) and seen["classes"]
    assert Path(seen["pal_core"]) == clone / "pal_core" / "__init__.py"
    assert "pal_lite" in seen["models"]
    assert Path(seen["default"]) == clone / "weights" / "pal_lite.safetensors"
    assert not seen["sys_path_changed"] and not seen["nodes_module"]


def test_a_wheel_ships_the_model_and_the_examples_and_pal_runs_from_it(tmp_path):
    """`pip install .` (not editable): the wheel alone, used from outside the checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("pal_nodes-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target)}  # ahead of this checkout's editable install
    env.pop(resources.WEIGHTS_ENV, None)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def pal(*args: str) -> subprocess.CompletedProcess:  # the console script the wheel installs
        return subprocess.run([str(target / "bin" / "pal"), *args], capture_output=True, text=True, cwd=work, env=env)

    where = subprocess.run([sys.executable, "-c", "import pal_core, pal_core.hub.resources as r; "
                            "print(pal_core.__file__); print(r.examples_dir())"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout.split()
    assert Path(where[0]) == target / "pal_core" / "__init__.py"
    examples = Path(where[1])
    assert examples == target / "pal_core" / "examples"

    detected = pal("detect", str(examples / "input" / EXAMPLE_IMAGE))
    assert detected.returncode == 0, detected.stderr
    assert json.loads(detected.stdout.splitlines()[0])["model"] == "pal_lite"

    listed = pal("run", "--list-examples")
    assert listed.returncode == 0 and DETECT_EXAMPLE in listed.stdout.splitlines()
    ran = pal("run", DETECT_EXAMPLE, "--engine", "builtin", "--output-dir", "out", "--quiet", "--json")
    assert ran.returncode == 0, ran.stderr
    assert [Path(f).name for f in json.loads(ran.stdout)["files"]] == ["overlay_00001_.png"]
