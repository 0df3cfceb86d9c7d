"""The compatibility corpus: example workflows as past releases shipped them, frozen byte for byte.

    from workflow_corpus import corpus_members
    for member in corpus_members():        # every (release, example), oldest release first
        member.ui, member.api              # the UI-format file and its API-format twin (Paths)
        member.classes                     # the node classes its API twin uses
        member.needs_checkpoint            # generates first: runs only where a checkpoint is given
    added_since(member, NODE_CLASS_MAPPINGS)  # {class: {input: default}} the nodes gained since it was saved
    with_added_defaults(member, prompt, NODE_CLASS_MAPPINGS)  # its API twin as a front end of today sends it

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
RELEASE_RECORDS = CORPUS / "node_inputs"  # what each release's nodes accepted (tests/test_node_input_schema.py)
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


def release_record(release: str) -> dict:
    return json.loads((RELEASE_RECORDS / f"{release}.json").read_text(encoding="utf-8"))


def added_since(member: CorpusMember, classes: dict[str, type]) -> dict[str, dict]:
    """{class_type: {input: default}}: the optional inputs each PAL node of today has that the member's release
    lacked. A UI file saved then has no value for them, so a front end of today fills in these defaults."""
    record = release_record(member.release)
    added = {}
    for class_type, cls in classes.items():
        declared = cls.INPUT_TYPES()
        known = record.get(class_type, {}).get("inputs", {})
        for section in ("required", "optional"):
            for name, entry in (declared.get(section) or {}).items():
                options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
                if name not in known and "default" in options:
                    added.setdefault(class_type, {})[name] = options["default"]
    return added


def with_added_defaults(member: CorpusMember, prompt: dict, classes: dict[str, type]) -> dict:
    """A copy of `prompt` (the member's API twin) with the inputs added since its release at their defaults,
    where the node does not set them: what a UI file of that release means to today's nodes."""
    added = added_since(member, classes)
    completed = json.loads(json.dumps(prompt))
    for node in completed.values():
        for name, default in added.get(node["class_type"], {}).items():
            node["inputs"].setdefault(name, default)
    return completed
