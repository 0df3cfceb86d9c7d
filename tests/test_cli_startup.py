"""`pal` starts fast: the heavy libraries are imported only by the commands that need them.

No timing here (the machine is shared; benchmarks/startup.py measures the start times): the test checks
what makes them slow, the modules a fresh interpreter has loaded after `pal --help` and `pal models`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pal_core.cli import COMMANDS, SUMMARIES, _summary, build_parser

HEAVY = ("torch", "cv2", "diffusers", "timm", "torchvision", "transformers", "numpy")

PROBE = """
import json, sys
from pal_core.cli import main
stage = sys.argv[1]
if stage != "import":
    try:
        main(stage.split())
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def _heavy_after(stage: str, tmp_path: Path) -> list[str]:
    env = {**os.environ, "PAL_HOME": str(tmp_path)}  # `pal models` reads an empty models folder
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=set(HEAVY)), stage], env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_library(tmp_path):
    assert _heavy_after("import", tmp_path) == []


def test_help_and_models_load_no_heavy_library(tmp_path):
    assert _heavy_after("--help", tmp_path) == []
    assert _heavy_after("models", tmp_path) == []
    assert _heavy_after("models --json", tmp_path) == []


def test_a_command_that_runs_a_detector_still_gets_torch(tmp_path):
    assert "torch" in _heavy_after("detect --help", tmp_path)  # the probe would see it: the test can fail


def _help_lines(parser) -> dict[str, str]:
    actions = parser._subparsers._group_actions[0]._choices_actions
    return {action.dest: action.help for action in actions}


def test_help_lists_each_command_with_its_own_help_line():
    full = _help_lines(build_parser())  # every module registered: its own help= text
    light = _help_lines(build_parser([]))  # what `pal --help` shows
    assert list(light) == list(COMMANDS) == list(full)
    assert light == full
    assert set(SUMMARIES) == set(COMMANDS) and all(_summary(c) for c in COMMANDS)
