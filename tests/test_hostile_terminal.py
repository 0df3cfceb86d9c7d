"""Untrusted text and places around `pal run` (issue 25, part 4): nothing is imported from the current
folder, escape sequences never reach the terminal raw, loaders stay inside their folder, and inputs that
would fail late are refused before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pal_core.cli import main
from pal_core.cli.console import terminal_text

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "workflows" / "Detect artifacts in your images.json"


def node(kind, **inputs):
    return {"class_type": kind, "inputs": inputs}


def comfyui_lookalike(folder: Path) -> Path:
    """A folder that looks like ComfyUI to a search of sys.path; importing any part of it leaves a mark."""
    (folder / "comfy").mkdir(parents=True)
    for name in ("comfy/__init__.py", "execution.py", "nodes.py", "folder_paths.py"):
        (folder / name).write_text(f"open({str(folder / 'IMPORTED')!r}, 'a').write({name!r})\n")
    return folder


@pytest.fixture
def place(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((8, 8, 3), 90, dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    return tmp_path


def run_graph(place, graph, capsys, *extra) -> tuple[int, str]:
    path = place / "graph.json"
    path.write_text(json.dumps(graph))
    code = main(["run", str(path), "--engine", "builtin", "--input-dir", str(place / "in"),
                 "--output-dir", str(place / "out"), *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err + captured.out


# ------------------------------------------------------------------------ nothing from the current folder


def test_python_m_in_a_folder_holding_a_comfyui_lookalike_imports_nothing_from_it(tmp_path):
    here = comfyui_lookalike(tmp_path / "downloads")
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    done = subprocess.run([sys.executable, "-m", "pal_core.cli", "run", str(WORKFLOW), "--engine", "auto",
                           "--output-dir", str(tmp_path / "out"), "--quiet", "--json"],
                          cwd=here, env=env, capture_output=True, text=True, timeout=600)
    assert not (here / "IMPORTED").exists()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["engine"] == "builtin"


def test_the_engine_search_skips_the_current_folder(tmp_path, monkeypatch):
    from pal_nodes import comfy_engine
    here = comfyui_lookalike(tmp_path / "here")
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    monkeypatch.chdir(here)
    others = [p for p in sys.path if p not in ("", ".")]
    monkeypatch.setattr(sys, "path", ["", str(here), *others])  # one setattr per list: undone exactly
    assert comfy_engine.locate() is None
    elsewhere = comfyui_lookalike(tmp_path / "ComfyUI")  # on sys.path, not the current folder: found
    monkeypatch.setattr(sys, "path", ["", str(here), str(elsewhere), *others])
    assert comfy_engine.locate() == elsewhere
    assert not (here / "IMPORTED").exists() and not (elsewhere / "IMPORTED").exists()


# ------------------------------------------------------------------------ escape sequences


def test_terminal_text_shows_controls_escaped():
    assert terminal_text("a\x1b]0;title\x07b\x9b2J\u202ec") == "a\\x1b]0;title\\x07b\\x9b2J\\u202ec"
    assert terminal_text("one\ntwo") == "one\ntwo" and terminal_text("one\ntwo", newline=None) == "one\\ntwo"
    assert terminal_text("tab\there") == "tab\there"


def test_escape_sequences_in_node_ids_and_class_names_are_shown_escaped(place, capsys):
    graph = {"1\x1b]0;pwned\x07": node("LoadImage", image="a.png"),
             "2\n[3/3] node 9 SaveImage: 0.01 s": node("No\x1b[2JSuch", image=["1\x1b]0;pwned\x07", 0]),
             "3": node("SaveImage", images=["2\n[3/3] node 9 SaveImage: 0.01 s", 0], filename_prefix="x")}
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and "\x1b" not in err and "\\x1b[2J" in err
    assert not any(line.startswith("[3/3]") for line in err.splitlines())  # no forged line


def test_escape_sequences_in_a_prefix_reach_the_terminal_escaped(place, capsys):
    graph = {"1": node("LoadImage", image="a.png"),
             "2": node("SaveImage", images=["1", 0], filename_prefix="x\x1b[2J\x1b]0;t\x07")}
    code, err = run_graph(place, graph, capsys)
    assert code == 0 and "\x1b" not in err and "\x07" not in err and "wrote " in err + ""
    assert "x\\x1b[2J" in err


def test_console_lines_of_detect_are_escaped(tmp_path, capsys, tiny_detector_file):
    name = tmp_path / "a\x1b[2J.png"
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(name, format="PNG")
    assert main(["detect", str(name), "--model", tiny_detector_file, "--device", "cpu", "--input-size", "64"]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.err and "a\\x1b[2J.png" in captured.err
    assert json.loads(captured.out)["image"] == str(name)  # JSON keeps the real name, escaped by JSON itself


# ------------------------------------------------------------------------ loaders stay inside their folder


def test_the_folder_loader_does_not_follow_a_link_out_of_the_input_folder(place, capsys, tmp_path):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(secret)
    (place / "in" / "set").mkdir()
    Image.fromarray(np.full((8, 8, 3), 10, dtype=np.uint8)).save(place / "in" / "set" / "own.png")
    (place / "in" / "set" / "z.png").symlink_to(secret)
    (place / "in" / "set" / "inner.png").symlink_to(place / "in" / "a.png")  # inside the input folder: kept
    graph = {"1": node("LoadImageSetFromFolderNode", folder="set"),
             "2": node("SaveImage", images=["1", 0], filename_prefix="set")}
    code, err = run_graph(place, graph, capsys)
    assert code == 0, err
    saved = sorted((place / "out").glob("set_*.png"))
    assert len(saved) == 2 and all(np.asarray(Image.open(p)).max() < 128 for p in saved)


# ------------------------------------------------------------------------ refused before anything runs


def test_a_null_required_input_is_refused_before_anything_runs(place, capsys):
    graph = {"1": node("LoadImage", image="a.png"), "2": node("SaveImage", images=["1", 0], filename_prefix="first"),
             "3": node("LoadImage", image=None), "4": node("SaveImage", images=["3", 0], filename_prefix="second")}
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and "node 3 (LoadImage) input 'image': required input has no value (null)" in err
    assert not (place / "out").exists() or not any((place / "out").iterdir())


def test_a_huge_filename_prefix_is_refused_before_the_detector_runs(place, capsys):
    graph = {"1": node("LoadImage", image="a.png"), "2": node("ImageInvert", image=["1", 0]),
             "3": node("SaveImage", images=["2", 0], filename_prefix="p" * 100_000)}
    code, err = run_graph(place, graph, capsys)
    assert code == 2 and "filename_prefix is too long (100000 characters" in err and len(err) < 5000
    assert not (place / "out").exists() or not any((place / "out").iterdir())


# ------------------------------------------------------------------------ words that say what was wrong


def png_with_text(path: Path, key: str, text: str, compressed: bool = False) -> Path:
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text(key, text, zip=compressed)
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("text, compressed, message", [
    ("[" * 100_000 + "]" * 100_000, False, "workflow text chunks cannot be read ('workflow' is nested too deeply)"),
    ("{not json", False, "'workflow' is not valid JSON"),
    ("x" * 3_000_000, True, "its text chunks are too large to read"),
])
def test_a_png_with_a_broken_workflow_chunk_says_so(tmp_path, capsys, text, compressed, message):
    path = png_with_text(tmp_path / "w.png", "workflow", text, compressed)
    assert main(["run", str(path), "--engine", "builtin"]) == 2
    err = capsys.readouterr().err
    assert message in err and "no 'workflow' or 'prompt' text chunk" not in err and "Traceback" not in err
