"""Freezes the example workflows of a past release into the compatibility corpus, byte for byte.

    python tools/freeze_workflow_corpus.py LABEL COMMIT "what this release changed"

Copies every workflows/*.json and workflows/api/*.json of COMMIT, exactly as git holds them, into
tests/data/workflows/corpus/LABEL/ (same relative paths) and records the commit, its date and each
file's git blob id in tests/data/workflows/corpus/MANIFEST.json, and what that release's nodes accepted
(inputs, widget order, outputs; read from its own code) in corpus/node_inputs/LABEL.json.
tests/test_workflow_corpus.py checks the files against those ids, so a corpus file edited by hand fails
the suite: the corpus is what users saved, never what we wish they had saved;
tests/test_node_input_schema.py checks today's nodes against every release's record. Run it when a
release changes what the examples ask of the nodes (docs/compatibility.md); an existing label is never
overwritten.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "workflows" / "corpus"
MANIFEST = CORPUS / "MANIFEST.json"
RECORDS = CORPUS / "node_inputs"
SOURCE = "workflows"
# Run inside the old release's files: its pal_core and nodes/, described by today's test helper.
DESCRIBE_RELEASE = """
import json, sys, importlib.util
import pal_core
assert pal_core.__file__.startswith(sys.argv[1]), pal_core.__file__
spec = importlib.util.spec_from_file_location("release_nodes", "nodes/__init__.py",
                                              submodule_search_locations=["nodes"])
nodes = importlib.util.module_from_spec(spec)
sys.modules["release_nodes"] = nodes
spec.loader.exec_module(nodes)
from test_node_input_schema import describe_pack
print(json.dumps(describe_pack(nodes.NODE_CLASS_MAPPINGS), indent=1))
"""


def git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True).stdout


def workflow_blobs(commit: str) -> dict[str, str]:
    """Relative path under workflows/ -> blob id, for the example workflows (UI and api/ twins) of `commit`."""
    blobs = {}
    for line in git("ls-tree", "-r", commit, "--", SOURCE).decode().splitlines():
        meta, path = line.split("\t", 1)
        relative = Path(path).relative_to(SOURCE)
        if relative.suffix == ".json" and (len(relative.parts) == 1 or relative.parts[0] == "api"):
            blobs[relative.as_posix()] = meta.split()[2]
    return blobs


def describe_release_nodes(commit: str) -> str:
    """The node record (tests/test_node_input_schema.py's format) of the nodes as `commit` had them."""
    with tempfile.TemporaryDirectory(prefix="pal-release-") as folder:
        archive = Path(folder) / "release.tar"
        archive.write_bytes(git("archive", commit))
        with tarfile.open(archive) as tar:
            tar.extractall(Path(folder) / "src", filter="data")
        source = Path(folder) / "src"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(source), str(ROOT / "tests")])}
        return subprocess.run([sys.executable, "-c", DESCRIBE_RELEASE, str(source)], cwd=source, env=env,
                              capture_output=True, text=True, check=True).stdout


def freeze(label: str, commit: str, why: str) -> dict:
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {"releases": []}
    if any(release["label"] == label for release in manifest["releases"]):
        raise SystemExit(f"{label} is already in the corpus; a frozen release is never rewritten")
    full = git("rev-parse", commit).decode().strip()
    date = git("show", "-s", "--format=%aI", full).decode().strip()
    blobs = workflow_blobs(full)
    if not blobs:
        raise SystemExit(f"{commit} has no example workflows under {SOURCE}/")
    folder = CORPUS / label
    for relative, blob in blobs.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(git("cat-file", "blob", blob))
    RECORDS.mkdir(parents=True, exist_ok=True)
    (RECORDS / f"{label}.json").write_text(describe_release_nodes(full))
    manifest["releases"].append({"label": label, "commit": full, "date": date, "changed": why,
                                 "files": dict(sorted(blobs.items()))})
    MANIFEST.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    freeze(*sys.argv[1:])
