"""What can go wrong with a workflow, as exceptions that carry every problem found, not just the first."""

from __future__ import annotations

from dataclasses import dataclass


class WorkflowError(Exception):
    """Base class: a workflow that cannot be run. `problems` lists each reason in words."""

    def __init__(self, summary: str, problems: list[str] | None = None):
        self.summary = summary
        self.problems = list(problems or [])
        super().__init__(self.describe())

    def describe(self) -> str:
        if not self.problems:
            return self.summary
        return self.summary + ":\n  " + "\n  ".join(self.problems)


class WorkflowFormatError(WorkflowError):
    """The file is not a workflow we can read (bad JSON, unknown layout, subgraphs, group nodes...)."""


@dataclass(frozen=True)
class Issue:
    """One validation problem, located as ComfyUI locates them: node id, class and input name."""

    node_id: str | None  # None: a problem of the whole workflow (e.g. no output node)
    class_type: str | None
    input_name: str | None
    kind: str  # ComfyUI's error type names where one exists, e.g. "value_bigger_than_max"
    message: str

    def __str__(self) -> str:
        if self.node_id is None:
            return f"workflow: {self.message}"
        where = f"node {self.node_id} ({self.class_type})"
        if self.input_name is not None:
            where += f" input '{self.input_name}'"
        return f"{where}: {self.message}"

    def as_dict(self) -> dict:
        return {"node_id": self.node_id, "class_type": self.class_type, "input_name": self.input_name,
                "type": self.kind, "message": self.message}


BUILTIN_MISSING_HINT = ("the built-in runtime has only the PAL nodes and a few core nodes (`pal run --list-nodes`); "
                        "run this workflow on ComfyUI's engine: pass --comfyui DIR (ComfyUI's folder) or set "
                        "COMFYUI_PATH")


class WorkflowValidationError(WorkflowError):
    """The workflow was read but would not run; nothing was executed. `missing_hint` says what to do
    about node classes the engine does not have."""

    def __init__(self, issues: list[Issue], missing_hint: str = BUILTIN_MISSING_HINT):
        self.issues = list(issues)
        count = len(self.issues)
        summary = f"the workflow is not valid ({count} problem{'s' if count != 1 else ''}); nothing was run"
        missing = self.missing_node_types()
        if missing:
            summary += "; missing node types: " + "; ".join(
                f"{kind} (node{'s' if len(ids) > 1 else ''} {', '.join(ids)})" for kind, ids in missing.items())
            summary += f". {missing_hint[0].upper()}{missing_hint[1:]}"
        super().__init__(summary, [str(issue) for issue in self.issues])

    def missing_node_types(self) -> dict[str, list[str]]:
        """{class_type: [node ids]} for every node whose class is not installed."""
        missing: dict[str, list[str]] = {}
        for issue in self.issues:
            if issue.kind == "missing_node_type":
                missing.setdefault(issue.class_type, []).append(issue.node_id)
        return missing


class NodeExecutionError(WorkflowError):
    """A node raised while running. Nodes that had finished keep their results in `partial`."""

    def __init__(self, node_id: str, class_type: str, cause: BaseException, partial=None):
        self.node_id = node_id
        self.class_type = class_type
        self.cause = cause
        self.partial = partial
        kind = cause.exception_type if isinstance(cause, HostNodeError) else type(cause).__name__
        super().__init__(f"node {node_id} ({class_type}) failed: {kind}: {cause}")


class HostNodeError(Exception):
    """What a node raised inside a host engine (ComfyUI), which reports it as text: the exception's type
    name, message and formatted traceback."""

    def __init__(self, exception_type: str, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.exception_type = exception_type
        self.traceback_text = traceback_text
