"""The pack as the Comfy registry takes it: pyproject.toml's metadata against the registry's published
rules (docs.comfy.org/registry/specifications), then comfy-cli itself (tests/comfy_cli.py, pinned),
offline, on a clean copy of the checkout: `comfy node validate` passes with no warning and
`comfy node pack` builds the archive a user gets, with what the pack needs to run and nothing else.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image

from comfy_cli import ComfyCli
from comfy_host import HostError, pack_files

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMFY = PYPROJECT["tool"]["comfy"]
# The registry's rules for a node id: < 100 characters; letters, digits, - _ .; no two special characters in a
# row; starts with a letter. Semantic X.Y.Z versions.
NODE_ID = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*")
VERSION = re.compile(r"\d+\.\d+\.\d+")
GITHUB = re.compile(r"https://github\.com/(?P<owner>[A-Za-z0-9-]+)/(?P<repo>[A-Za-z0-9._-]+)")
RAW = re.compile(r"https://raw\.githubusercontent\.com/(?P<owner>[^/]+)/(?P<repo>[^/]+)/(?P<ref>[^/]+)/(?P<path>.+)")
RUNTIME = {"__init__.py", "requirements.txt", "pyproject.toml", "LICENSE", "README.md", "web/pal_results.js",
           "nodes/__init__.py", "nodes/v3.py", "pal_core/__init__.py"}
NOT_PUBLISHED = ("tests/", "benchmarks/", "tools/", ".ci/")


# ----------------------------------------------------------------------------------- published rules

def test_the_node_id_and_version_follow_the_registry_rules():
    name, version = PYPROJECT["project"]["name"], PYPROJECT["project"]["version"]
    assert NODE_ID.fullmatch(name) and len(name) < 100, name
    assert "comfyui" not in name.lower()  # the registry asks packs not to carry ComfyUI in their id
    assert VERSION.fullmatch(version), version


def test_publisher_display_name_and_repository_are_real_values():
    assert re.fullmatch(r"[a-z][a-z0-9-]*", COMFY["PublisherId"]), COMFY["PublisherId"]
    assert 0 < len(COMFY["DisplayName"].strip()) <= 100
    assert GITHUB.fullmatch(PYPROJECT["project"]["urls"]["Repository"])
    assert PYPROJECT["project"]["urls"]["Issues"] == PYPROJECT["project"]["urls"]["Repository"] + "/issues"


def test_the_icon_is_a_square_image_of_this_repository():
    repository = GITHUB.fullmatch(PYPROJECT["project"]["urls"]["Repository"])
    icon = RAW.fullmatch(COMFY["Icon"])
    assert icon, f"Icon must be a raw.githubusercontent.com URL of this repository: {COMFY['Icon']!r}"
    assert (icon["owner"], icon["repo"]) == (repository["owner"], repository["repo"])
    path = Path(icon["path"])
    assert path in set(pack_files(ROOT)), f"{path} is not in the repository: the registry would show no icon"
    with Image.open(ROOT / path) as image:
        assert image.format == "PNG" and image.width == image.height <= 400, (image.format, image.size)


def test_includes_name_folders_the_pack_needs():
    files = set(pack_files(ROOT))
    for folder in COMFY["includes"]:
        assert (ROOT / folder).is_dir() and any(PurePosixPath(f).parts[0] == folder for f in map(str, files)), folder
    assert any(str(f).endswith(".safetensors") for f in files if str(f).startswith("weights/"))


# ------------------------------------------------------------------------------------------ comfy-cli

@pytest.fixture(scope="module")
def comfy_cli() -> ComfyCli:
    try:
        return ComfyCli.prepare()
    except HostError as error:
        pytest.fail(str(error))


@pytest.fixture
def clean_copy(tmp_path) -> Path:
    """What a clone of the checkout holds (tracked and new unignored files), as a git repository."""
    copy = tmp_path / "pal-nodes"
    for name in pack_files(ROOT):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    return copy


def test_comfy_node_validate_passes_offline_without_warnings(comfy_cli, clean_copy):
    result = comfy_cli.run(clean_copy, "node", "validate")
    said = result.stdout + result.stderr  # comfy-cli prints its verdicts on stderr when not on a terminal
    assert result.returncode == 0, said
    assert "All validation checks passed" in said and "warning" not in said.lower(), said


def test_comfy_node_validate_refuses_a_pyproject_without_version(comfy_cli, clean_copy):
    pyproject = clean_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "', 'version = "" # was "', 1))
    result = comfy_cli.run(clean_copy, "node", "validate")
    assert result.returncode == 1 and "project version is empty" in result.stdout + result.stderr


def test_comfy_node_pack_builds_what_the_pack_needs_and_no_tests(comfy_cli, clean_copy):
    result = comfy_cli.run(clean_copy, "node", "pack")
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(clean_copy / "node.zip") as archive:
        packed = set(archive.namelist())
    expected = {str(PurePosixPath(f)) for f in pack_files(ROOT) if not str(PurePosixPath(f)).startswith(NOT_PUBLISHED)}
    assert RUNTIME <= packed
    assert packed == expected, (sorted(packed - expected), sorted(expected - packed))
    for folder in COMFY["includes"]:
        assert any(name.startswith(folder + "/") for name in packed), folder
