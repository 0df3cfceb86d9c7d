"""The compatibility corpus: example workflows as past releases shipped them, frozen byte for byte.

    from workflow_corpus import corpus_members
    for member in corpus_members():        # every (release, example), oldest release first
        member.ui, member.api              # the UI-format file and its API-format twin (Paths)
        member.classes                     # the node classes its API twin uses
        member.needs_checkpoint            # generates first: runs only where a checkpoint is given

tests/data/workflows/corpus/<release>/ holds a release's workflows/*.json and workflows/api/*.json;
MANIFEST.json says which commit each came from and each file's git blob id (tools/freeze_workflow_corpus.py
writes both). Every test that promises "saved workflows keep running" (both engines of `pal run`, the real
ComfyUI, its front end, any other adapter of the nodes) takes its files from here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "data" / "workflows" / "corpus"
MANIFEST = CORPUS / "MANIFEST.json"
EXAMPLE_INPUTS = Path(__file__).resolve().parent.parent / "workflows" / "input"  # what every member loads
CHECKPOINT_LOADERS = {"CheckpointLoaderSimple"}


@dataclass(frozen=True)
class CorpusMember:
    """One example workflow of one release: its UI file and API twin, as that release shipped them."""

    release: str  # the folder name: <date>_<commit>
    name: str  # the example's file name without .json, as it was called then
    commit: str
    date: str

    @property
    def id(self) -> str:
        """A short, stable test id."""
        return f"{self.release}/{self.name}"

    @property
    def ui(self) -> Path:
        return CORPUS / self.release / f"{self.name}.json"

    @property
    def api(self) -> Path:
        return CORPUS / self.release / "api" / f"{self.name}.json"

    @cached_property
    def api_prompt(self) -> dict:
        return json.loads(self.api.read_text(encoding="utf-8"))

    @property
    def classes(self) -> set[str]:
        return {node["class_type"] for node in self.api_prompt.values()}

    @property
    def needs_checkpoint(self) -> bool:
        return bool(self.classes & CHECKPOINT_LOADERS)


def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def corpus_members() -> list[CorpusMember]:
    """Every example of every frozen release (oldest first), as recorded in MANIFEST.json."""
    members = []
    for release in manifest()["releases"]:
        names = sorted(Path(path).stem for path in release["files"] if "/" not in path)
        members += [CorpusMember(release["label"], name, release["commit"], release["date"]) for name in names]
    return members


def corpus_files() -> list[tuple[Path, str]]:
    """(path, the git blob id it had when committed) for every file of the corpus."""
    return [(CORPUS / release["label"] / relative, blob)
            for release in manifest()["releases"] for relative, blob in release["files"].items()]


def git_blob_id(data: bytes) -> str:
    """The id git gives these bytes as a file: equal ids, equal bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
