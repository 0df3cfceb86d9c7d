"""The README and docs/ say what the project does: their commands parse, their links resolve, the node
reference is the nodes' own, the main job prints what the README shows, and every figure the README
quotes is in docs/benchmarks.md (with the machine and load it was measured on)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pal_core.cli import COMMANDS as COMMAND_NAMES
from pal_core.cli import build_parser
from pal_core.hub.resources import examples_dir

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
TEST_COMMAND = "pip install -e '.[test]' && python -m pytest -q"  # CI (.ci/run) runs it as the README says
MAIN_JOB = "pip install -e . && pal fix workflows/input/*.jpg --out out/"
# Written by the helpers of other issues (models: 23, compatibility: 24, troubleshooting: 25): the README
# links them already. Remove a name here once its file is in the tree; a link to any other missing file fails.
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def code_blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text(encoding="utf-8")) if lang == language]


def shell_commands(block: str) -> list[list[str]]:
    """Each simple command of a shell block as words: continuation lines joined, comments dropped, split
    at newlines, &&, ; and |, leading VAR=value assignments removed, $VARIABLES read as 0 (a shard number)."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words = []
        for token in lexer:
            if token in {"&&", ";", "|", "||"}:
                commands.append(words)
                words = []
            elif words or not re.fullmatch(r"[A-Z_]+=\S*", token):
                words.append(re.sub(r"\$[A-Za-z_]+", "0", token))
        commands.append(words)
    return [c for c in commands if c]


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in [README, *DOCS]:
        for block in code_blocks(path, "bash") + code_blocks(path, "sh"):
            found += [(path.relative_to(ROOT).as_posix(), command) for command in shell_commands(block)]
    return found


COMMANDS = documented_commands()


def test_the_commands_ci_runs_are_in_the_readme_verbatim():
    text = README.read_text(encoding="utf-8")
    assert TEST_COMMAND in text and MAIN_JOB in text


def test_the_readme_reads_in_two_minutes():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert 150 <= len(lines) <= 250, len(lines)


def test_docs_have_commands_to_check():
    assert sum(1 for _, c in COMMANDS if c[0] == "pal") >= 20  # the extraction finds them: this test can fail


@pytest.mark.parametrize("where, words", [c for c in COMMANDS if c[1][0] == "pal"],
                         ids=[" ".join(c[1])[:60] for c in COMMANDS if c[1][0] == "pal"])
def test_every_documented_pal_command_parses(where, words):
    args = words[1:]
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exit:
        assert exit.code == 0, f"{where}: `{' '.join(words)}` is refused by the CLI"
        return
    if parsed.command == "run" and parsed.workflow:  # a file of the repository or a shipped example's name
        examples = {p.stem for p in examples_dir().glob("*.json")}
        assert (ROOT / parsed.workflow).is_file() or str(parsed.workflow) in examples, \
            f"{where}: `pal run {parsed.workflow}` names no file and no example ({sorted(examples)})"


@pytest.mark.parametrize("where, words", [c for c in COMMANDS if c[1][:2] == ["pip", "install"]],
                         ids=[" ".join(c[1])[:60] for c in COMMANDS if c[1][:2] == ["pip", "install"]])
def test_every_documented_install_names_real_extras(where, words):
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for word in words[2:]:
        named = re.fullmatch(r"(?:\.|pal-nodes|-e \.)\[([a-z,]+)\]", word)
        if named:
            assert set(named.group(1).split(",")) <= extras, f"{where}: {word}: extras are {sorted(extras)}"
        elif word.endswith("requirements.txt"):
            assert word.split("/")[-1] == "requirements.txt"


def test_every_documented_script_exists():
    """`python benchmarks/X.py` and `python tools/X.py`, in code blocks or inline: the scripts are there."""
    named = set()
    for path in [README, *DOCS]:
        named |= {(path.name, script) for script in
                  re.findall(r"python ((?:benchmarks|tools)/[\w/]+\.py)", path.read_text(encoding="utf-8"))}
    assert len(named) >= 5  # the pattern finds them: this test can fail
    missing = sorted((where, script) for where, script in named if not (ROOT / script).is_file())
    assert not missing


def _links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return [target for target in re.findall(r"\]\(<?([^)>\s]+)>?\)", text) if "://" not in target]


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_every_link_resolves(path):
    for target in _links(path):
        file = target.split("#")[0]
        if not file:
            continue
        resolved = (path.parent / file).resolve()
        assert resolved.exists(), f"{path.name}: link to {target} resolves to nothing"


def test_node_reference_is_what_the_nodes_say():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import make_node_docs
    finally:
        sys.path.remove(str(ROOT / "tools"))
    current = (ROOT / "docs" / "nodes.md").read_text(encoding="utf-8")
    assert current == make_node_docs.render(), "docs/nodes.md is stale: run python tools/make_node_docs.py"


FIGURE = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)?)\s?(ms|s|MB|GB|MiB|GiB|minutes|min|x|%)(?![\w])")


def _prose(text: str) -> str:
    return FENCE.sub("", re.sub(r"`[^`\n]*`", "", text))


def test_every_figure_in_the_readme_is_in_the_benchmarks():
    figures = FIGURE.findall(_prose(README.read_text(encoding="utf-8")))
    assert figures, "no figure found: the pattern is broken"
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    missing = [f"{n} {u}" for n, u in figures if not re.search(rf"(?<![\w.]){re.escape(n)}\s?{re.escape(u)}(?!\w)",
                                                                    benchmarks)]
    assert not missing, f"figures in the README that docs/benchmarks.md does not show: {missing}"


def test_the_main_job_prints_what_the_readme_shows(tmp_path):
    """The README's sample output is the main job's own, line for line (it runs here: about a minute)."""
    shown = [b for b in code_blocks(README, "text") if "pal fix: " in b]
    assert len(shown) == 1
    inputs = sorted(str(p) for p in (ROOT / "workflows" / "input").glob("*.jpg"))
    env = {**os.environ, "PAL_HOME": str(tmp_path / "home")}  # no official model installed: the shipped one runs
    result = subprocess.run([sys.executable, "-m", "pal_core.cli", "fix", *inputs, "--out", "out/"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == shown[0].splitlines()


def _options_of(command: str) -> set[str]:
    parser = build_parser([command])
    sub = parser._subparsers._group_actions[0].choices[command]
    found = {o for action in sub._actions for o in action.option_strings}
    for action in sub._actions:  # `pal models add` and the like
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for child in action.choices.values():
                found |= {o for a in child._actions for o in a.option_strings}
    return found


def test_every_option_in_a_synopsis_exists():
    """The `pal COMMAND [--option ...]` synopses (text blocks) name only options the command has."""
    checked = 0
    for path in [README, *DOCS]:
        for block in code_blocks(path, "text"):
            command = None
            for line in block.splitlines():
                words = line.split()
                if len(words) > 1 and words[0] == "pal" and words[1] in COMMAND_NAMES:
                    command = words[1]
                elif not line.startswith(" "):  # not a synopsis, nor the continuation of one
                    command = None
                if command is None:
                    continue
                options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line))
                unknown = options - _options_of(command)
                assert not unknown, f"{path.name}: `pal {command}` has no {sorted(unknown)}"
                checked += len(options)
    assert checked >= 30  # the synopses are found: this test can fail
