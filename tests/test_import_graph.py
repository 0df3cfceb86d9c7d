"""pal_core knows nothing above it: no module of the library imports the node pack or ComfyUI.

Checked two ways: every pal_core module's imports read from its syntax tree (import statements,
relative imports resolved, and importlib.import_module / __import__ / importlib.util.find_spec... calls
with a literal name or a module-level string constant), and the whole library imported in a fresh
interpreter whose sys.modules is then inspected. The node pack and the ComfyUI engine reach pal_core
only the other way round, through the entry points the pack declares (pal_core/workflow/plugins.py).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "pal_core"
FORBIDDEN = ("nodes", "pal_nodes", "folder_paths", "server")  # and every top-level name starting with "comfy"
# Packages named comfy* that are not ComfyUI: pip packages of data.
NOT_THE_HOST = {"comfyui_workflow_templates_media_image"}  # example images, training data (pal prepare-data)
IMPORT_CALLS = {"import_module", "__import__"}


def forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return (top in FORBIDDEN or top.startswith("comfy")) and top not in NOT_THE_HOST


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve_relative(current: str, is_package: bool, level: int, target: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    if not base:  # above the top-level package: whatever it names is outside the library
        return target or ""
    return ".".join(base + ([target] if target else []))


def _string_constants(tree: ast.Module) -> dict[str, str]:
    constants = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant) \
                and isinstance(statement.value.value, str):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = statement.value.value
    return constants


def imported_names(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module name) for everything the source imports, statically or through importlib."""
    tree = ast.parse(source)
    constants = _string_constants(tree)
    found = []
    for item in ast.walk(tree):
        if isinstance(item, ast.Import):
            found += [(item.lineno, alias.name) for alias in item.names]
        elif isinstance(item, ast.ImportFrom):
            if item.level:
                target = _resolve_relative(module, is_package, item.level, item.module)
                found += [(item.lineno, target)]
                found += [(item.lineno, f"{target}.{alias.name}" if target else alias.name) for alias in item.names]
            else:
                found.append((item.lineno, item.module))
        elif isinstance(item, ast.Call) and item.args:
            function = item.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
            if name in IMPORT_CALLS or name == "find_spec":
                argument = item.args[0]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    found.append((item.lineno, argument.value))
                elif isinstance(argument, ast.Name) and argument.id in constants:
                    found.append((item.lineno, constants[argument.id]))
    return found


def test_the_checker_sees_every_way_of_importing():
    source = '''
import importlib
import nodes
from comfy import model_management
import comfy_extras.nodes_mask as extras
from folder_paths import get_input_directory
PACK = "pal_nodes"
importlib.import_module(PACK)
importlib.import_module("server")
__import__("comfy_execution.graph")
from ... import nodes as up
from .sibling import thing
'''
    names = [name for _, name in imported_names(source, "pal_core.workflow.registry")]
    assert sorted(name for name in names if forbidden(name)) == sorted([
        "nodes", "comfy", "comfy_extras.nodes_mask", "folder_paths", "pal_nodes", "server", "comfy_execution.graph",
        "nodes"])
    assert "pal_core.workflow.sibling" in names and "importlib" in names


def test_no_library_module_imports_the_pack_or_comfyui():
    modules = sorted(LIBRARY.rglob("*.py"))
    assert len(modules) > 40  # the whole library, not an empty glob
    offences = []
    for path in modules:
        for line, name in imported_names(path.read_text(encoding="utf-8"), module_name(path),
                                         path.name == "__init__.py"):
            if forbidden(name):
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offences == []


def test_importing_the_whole_library_loads_neither_the_pack_nor_comfyui(tmp_path):
    script = """
import importlib, json, pkgutil, sys
import pal_core
failed = {}
for info in pkgutil.walk_packages(pal_core.__path__, "pal_core."):
    if info.name.endswith(".__main__"):  # runs the command line
        continue
    try:
        importlib.import_module(info.name)
    except ImportError as error:  # an optional extra that is not installed
        failed[info.name] = str(error)
print(json.dumps({"modules": sorted(sys.modules), "failed": failed}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    loaded = [name for name in report["modules"] if name.startswith("pal_core")]
    assert "pal_core.workflow.plugins" in loaded and "pal_core.cli.run" in loaded and len(loaded) > 40
    assert [name for name in report["modules"] if forbidden(name)] == []
    assert report["failed"] == {}


# pal_core's own floors, lowest first: a module imports only from its own floor or below, so data flows one
# way (image -> detector -> mask -> crop plan -> inpainter -> composite) and nothing low knows what uses it.
FLOORS = (
    {"atomic", "config", "imageio", "outputs", "layouts", "locks"},  # files, tensors, saved settings: no model, no policy
    {"models"},  # networks
    {"detect"},  # running a network on images
    {"hub"},  # model files, the catalogue, downloads
    {"refinement"},  # crop plan, inpainters, composite
    {"rank"},  # PAR over image sets
    {"train"},  # data, training, distillation, evaluation
    {"verdicts", "sheets"},  # what a person reads after a run
    {"workflow"},  # the headless runner
    {"cli"},  # the `pal` command
)


def floor_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pal_core" or len(parts) < 2:
        return None
    return next((level for level, names in enumerate(FLOORS) if parts[1] in names), None)


def test_every_library_module_has_a_floor():
    unplaced = sorted(module_name(path) for path in LIBRARY.rglob("*.py")
                      if path.parent != LIBRARY or path.name != "__init__.py"
                      if floor_of(module_name(path)) is None
                      and not module_name(path).startswith(("pal_core.weights", "pal_core.examples")))
    assert unplaced == []


def test_library_modules_import_only_from_their_floor_or_below():
    offences = []
    for path in sorted(LIBRARY.rglob("*.py")):
        module = module_name(path)
        own = floor_of(module)
        if own is None:  # pal_core/__init__.py: the public API, re-exported from every floor
            continue
        for line, name in imported_names(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            level = floor_of(name)
            if level is not None and level > own:
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {name} from a floor above")
    assert offences == []


def test_the_floor_check_sees_an_upward_import():
    names = [name for _, name in imported_names("from ..refinement.crops import CropPlan\n",
                                                "pal_core.detect.detector")]
    assert floor_of("pal_core.detect.detector") < floor_of(names[0])
