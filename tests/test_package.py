"""The repository root is a ComfyUI custom-node folder: it imports as a package without ComfyUI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_root_package_imports_without_comfyui():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pal_nodes_pack', r'{ROOT / '__init__.py'}',\n"
        f"    submodule_search_locations=[r'{ROOT}'])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['pal_nodes_pack'] = module\n"
        "spec.loader.exec_module(module)\n"
        "assert isinstance(module.NODE_CLASS_MAPPINGS, dict)\n"
        "assert isinstance(module.NODE_DISPLAY_NAME_MAPPINGS, dict)\n"
        "assert 'comfy' not in sys.modules and 'folder_paths' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_library_never_imports_comfyui():
    sources = "\n".join(p.read_text() for p in (ROOT / "pal_core").rglob("*.py"))
    assert "import comfy" not in sources and "import folder_paths" not in sources
    assert importlib.util.find_spec("pal_core") is not None
