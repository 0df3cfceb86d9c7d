"""`pal run` on ComfyUI's own engine: the graph runs in this process through ComfyUI's node registry
(core nodes, comfy_extras, custom_nodes/ and this pack), its validation and its executor — what the UI
does when you press Queue, with no server and no browser.

pal_core never imports this module (nor ComfyUI): it is the `comfyui` engine this pack declares in
pyproject.toml (entry point group `pal_core.engines`), loaded only when `pal run` asks for it. It lives
in the pack because it is an adapter to the host, as the nodes are.

ComfyUI keeps its state in process-wide modules (folder_paths, nodes, comfy.cli_args), so a process
sets it up once, from one ComfyUI folder; each run then sets its own input/output/temp folders and puts
ComfyUI's back afterwards.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pal_core.workflow import formats, overrides
from pal_core.workflow.context import RunContext
from pal_core.workflow.engines import COMFYUI_ENV, EngineJob, EngineUnavailable
from pal_core.workflow.errors import HostNodeError, Issue, NodeExecutionError, WorkflowValidationError
from pal_core.workflow.executor import NodeRecord, RunResult, written_files
from pal_core.workflow.validation import needed_nodes

from . import NODE_CLASS_MAPPINGS as PACK_CLASSES

PACK_FOLDER = Path(__file__).resolve().parent
MISSING_HINT = ("ComfyUI has no such node classes: install the packs that provide them in its custom_nodes/ "
                "folder (ComfyUI's log above names packs that failed to import)")


# ----------------------------------------------------------------------------------- finding ComfyUI

def looks_like_comfyui(folder: Path) -> bool:
    return all((folder / name).exists() for name in ("execution.py", "nodes.py", "folder_paths.py", "comfy"))


def importable_comfyui() -> Path | None:
    """ComfyUI's folder when this Python can import it (found without importing anything). The current
    folder does not count (`python -m` puts it on sys.path): a ComfyUI look-alike in whatever folder pal is
    started from must never be imported and run; a ComfyUI there is used when named (--comfyui, $COMFYUI_PATH)."""
    here = Path.cwd().resolve()
    search = [entry for entry in sys.path if entry not in ("", ".") and Path(entry).resolve() != here]
    try:
        spec = importlib.machinery.PathFinder.find_spec("folder_paths", search)
    except (ImportError, ValueError, OSError):
        return None
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).resolve().parent
    return folder if looks_like_comfyui(folder) else None


def locate(explicit: str | os.PathLike | None = None) -> Path | None:
    """The ComfyUI to run on: the folder given, else $COMFYUI_PATH, else an importable one, else None."""
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    if os.environ.get(COMFYUI_ENV):
        return Path(os.environ[COMFYUI_ENV]).expanduser().absolute()
    return importable_comfyui()


# ------------------------------------------------------------------------------------- ComfyUI setup

@dataclass
class _Comfy:
    """ComfyUI loaded into this process: its modules and the folders it started with."""

    folder: Path
    nodes: object
    execution: object
    folder_paths: object
    import_failed: list[str]
    host: "HeadlessHost"
    defaults: dict = field(default_factory=dict)  # folder_paths' input/output/temp folders at start


_loaded: _Comfy | None = None


def _start(folder: Path) -> _Comfy:
    global _loaded
    folder = folder.resolve()
    if _loaded is not None:
        if _loaded.folder != folder:
            raise EngineUnavailable(f"this process already runs ComfyUI from {_loaded.folder}; one process can "
                                    f"load only one ComfyUI (asked for {folder})")
        return _loaded
    if not looks_like_comfyui(folder):
        raise EngineUnavailable(f"{folder} is not a ComfyUI folder (it needs main.py's neighbours execution.py, "
                                "nodes.py, folder_paths.py and comfy/); pass --comfyui the folder ComfyUI runs from")
    _check_no_other_nodes_module(folder)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    _quiet_logging()
    try:  # in main.py's order: nodes.py puts comfy/ first on sys.path, where comfy/utils.py would hide utils/
        _configure_arguments()
        import folder_paths
        import utils.extra_config  # noqa: F401
        import execution
        host = _stand_in_for_the_server()
        import nodes
    except Exception as error:
        raise EngineUnavailable(
            f"ComfyUI in {folder} cannot be imported by this Python ({sys.executable}): "
            f"{type(error).__name__}: {error}. Run pal from ComfyUI's Python environment "
            "(pip install -e <this pack> into it), or install ComfyUI's requirements.txt here") from error
    _load_model_paths(folder, folder_paths)
    import_failed = asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False)) or []
    _load_this_pack(nodes)
    _loaded = _Comfy(folder, nodes, execution, folder_paths, list(import_failed), host)
    _loaded.defaults = {"input": folder_paths.get_input_directory(), "output": folder_paths.get_output_directory(),
                        "temp": folder_paths.get_temp_directory()}
    return _loaded


def _check_no_other_nodes_module(folder: Path) -> None:
    """ComfyUI's nodes.py is imported as the top-level module `nodes`; another one already loaded (e.g. a
    checkout's nodes/ folder) would be taken for it."""
    module = sys.modules.get("nodes")
    if module is not None and Path(getattr(module, "__file__", "") or "").resolve() != folder / "nodes.py":
        raise EngineUnavailable(f"a module named 'nodes' is already loaded from {getattr(module, '__file__', '?')}; "
                                "ComfyUI's nodes.py cannot be imported in this process")


def _quiet_logging() -> None:
    """ComfyUI logs through the root logger; without a handler of the caller's, its warnings (packs that
    failed to import, missing models) go to stderr and its start-up chatter is dropped."""
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("comfyui: %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.WARNING)


def _configure_arguments() -> None:
    """ComfyUI reads its command line (comfy.cli_args) when its modules are imported; here it gets its
    defaults, plus --cpu when torch has no GPU (ComfyUI needs it then) and no API nodes (no network)."""
    import comfy.options  # noqa: F401 (its args_parsing stays off: ComfyUI must not read pal's argv)
    from comfy.cli_args import args
    if not torch.cuda.is_available():
        args.cpu = True
    args.disable_api_nodes = True
    args.disable_auto_launch = True


class HeadlessHost:
    """What ComfyUI's executor and nodes expect of its PromptServer, without a server: messages come
    here instead of a websocket (they drive the progress lines), routes that packs register at import
    are kept and never served. No socket is opened."""

    def __init__(self):
        from aiohttp import web
        self.routes = web.RouteTableDef()
        self.client_id: str | None = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.supports: list[str] = []
        self.prompt_queue = None
        self.listener = None  # a callable (event, data), set for the run in progress

    def send_sync(self, event, data, sid=None) -> None:
        if self.listener is not None:
            self.listener(event, data)

    def send_progress_text(self, text, node_id, sid=None) -> None:
        pass

    def queue_updated(self) -> None:
        pass


def _stand_in_for_the_server() -> HeadlessHost:
    """Some comfy_extras and custom packs reach the server through PromptServer.instance."""
    host = HeadlessHost()
    try:
        import server
    except Exception as error:  # comfy_extras nodes that need it will report their own import failure
        logging.warning("ComfyUI's server module cannot be imported (%s); nodes that use it will be missing", error)
        return host
    if getattr(server.PromptServer, "instance", None) is None:
        server.PromptServer.instance = host
    return host


def _load_model_paths(folder: Path, folder_paths) -> None:
    """As ComfyUI's main.py: its own extra_model_paths.yaml, if there is one."""
    import utils.extra_config
    yaml_path = folder / "extra_model_paths.yaml"
    if yaml_path.is_file():
        utils.extra_config.load_extra_path_config(str(yaml_path))


def _load_this_pack(nodes) -> None:
    """ComfyUI has loaded custom_nodes/; when this pack was not among them, load it the way ComfyUI loads a
    custom node folder (a fresh import that sees the running ComfyUI)."""
    if all(name in nodes.NODE_CLASS_MAPPINGS for name in PACK_CLASSES):
        return
    base_names = set(nodes.NODE_CLASS_MAPPINGS)
    if not asyncio.run(nodes.load_custom_node(str(PACK_FOLDER), ignore=base_names, module_parent="custom_nodes")):
        raise EngineUnavailable(f"ComfyUI could not load the PAL node pack from {PACK_FOLDER} (its log above says why)")


# ------------------------------------------------------------------------------------------ one run

@contextmanager
def _folders(comfy: _Comfy, job: EngineJob):
    """The run's input/output/temp folders in folder_paths, ComfyUI's own put back afterwards. Previews go
    to --preview-dir, else to a temporary folder that is removed."""
    folder_paths = comfy.folder_paths
    input_dir = job.input_dir or job.input_folder_beside() or Path(comfy.defaults["input"])
    output_dir = job.output_dir or Path(comfy.defaults["output"])
    with tempfile.TemporaryDirectory(prefix="pal-run-temp-") as scratch:
        temp_dir = job.preview_dir or Path(scratch)
        for path in (output_dir, temp_dir):
            path.mkdir(parents=True, exist_ok=True)
        folder_paths.set_input_directory(str(input_dir))
        folder_paths.set_output_directory(str(output_dir))
        folder_paths.set_temp_directory(str(temp_dir))
        try:
            yield RunContext(input_dir=input_dir, output_dir=output_dir, preview_dir=job.preview_dir)
        finally:
            folder_paths.set_input_directory(comfy.defaults["input"])
            folder_paths.set_output_directory(comfy.defaults["output"])
            folder_paths.set_temp_directory(comfy.defaults["temp"])


def _add_model_folders(comfy: _Comfy, job: EngineJob) -> None:
    import utils.extra_config
    for yaml_path in job.extra_model_paths:
        if not yaml_path.is_file():
            raise EngineUnavailable(f"--extra-model-paths {yaml_path}: no such file")
        utils.extra_config.load_extra_path_config(str(yaml_path))
    if job.models_dir is not None:  # searched first, for every kind ComfyUI knows
        for kind in list(comfy.folder_paths.folder_names_and_paths):
            comfy.folder_paths.add_model_folder_path(kind, str(job.models_dir / kind), is_default=True)


def _validate(comfy: _Comfy, prompt: dict, prompt_id: str) -> list[str]:
    """ComfyUI's validation; every problem becomes an Issue (node id, class, input). Returns the output
    nodes to execute."""
    missing = [Issue(node_id, node["class_type"], None, "missing_node_type",
                     f"ComfyUI has no node class '{node['class_type']}'")
               for node_id, node in prompt.items() if node["class_type"] not in comfy.nodes.NODE_CLASS_MAPPINGS]
    if missing:
        failed = [Issue(None, None, None, "custom_node_import_failed", f"could not be imported: {name}")
                  for name in comfy.import_failed]
        raise WorkflowValidationError(missing + failed, missing_hint=MISSING_HINT)
    valid, error, outputs, node_errors = asyncio.run(comfy.execution.validate_prompt(prompt_id, prompt, None))
    issues = []
    for node_id, entry in (node_errors or {}).items():
        for reason in entry.get("errors", []):
            details = f": {reason['details']}" if reason.get("details") else ""
            input_name = (reason.get("extra_info") or {}).get("input_name")
            issues.append(Issue(str(node_id), entry.get("class_type"), input_name, reason.get("type", "invalid"),
                                f"{reason.get('message', '')}{details}"))
    if not valid and not issues:
        details = f": {error['details']}" if error.get("details") else ""
        issues.append(Issue(None, None, None, error.get("type", "invalid_prompt"), f"{error.get('message')}{details}"))
    if issues:
        raise WorkflowValidationError(issues, missing_hint=MISSING_HINT)
    return list(outputs)


class _ProgressListener:
    """Turns the executor's messages into per-node timings and progress lines (as the built-in runtime)."""

    def __init__(self, prompt: dict, total: int, progress):
        self.prompt, self.total, self.progress = prompt, total, progress
        self.order: list[str] = []
        self.seconds: dict[str, float] = {}
        self.current: str | None = None
        self.started = 0.0

    def __call__(self, event: str, data) -> None:
        if event == "executing":
            self._finish()
            if isinstance(data, dict) and data.get("node") is not None:
                self.current, self.started = str(data["node"]), time.perf_counter()
                self.order.append(self.current)
        elif event == "execution_success":
            self._finish()
        elif event in ("execution_error", "execution_interrupted"):
            if self.current is not None and self.progress:
                reason = data.get("exception_message", "interrupted") if isinstance(data, dict) else ""
                self.progress(f"[{len(self.order)}/{self.total}] node {self.current} "
                              f"{self.prompt[self.current]['class_type']}: FAILED ({str(reason).strip()})")
            self.current = None

    def _finish(self) -> None:
        if self.current is None:
            return
        self.seconds[self.current] = time.perf_counter() - self.started
        if self.progress:
            self.progress(f"[{len(self.order)}/{self.total}] node {self.current} "
                          f"{self.prompt[self.current]['class_type']}: {self.seconds[self.current]:.2f} s")
        self.current = None


def _result(executor, prompt: dict, listener: _ProgressListener, context: RunContext, source_format: str,
            warnings: list[str], seconds: float) -> RunResult:
    result = RunResult(prompt, list(listener.order), source_format=source_format, engine="comfyui",
                       warnings=warnings, seconds=seconds)
    for node_id in listener.order:
        if node_id not in listener.seconds:  # the node that failed
            continue
        outputs = executor.caches.outputs.get(node_id)
        ui_entry = executor.caches.ui.get(node_id)
        ui = (ui_entry or {}).get("output") or {}
        result.nodes[node_id] = NodeRecord(node_id, prompt[node_id]["class_type"], listener.seconds[node_id], 1,
                                           list(outputs) if outputs is not None else [], ui)
        result.files += [path for path in written_files(ui, context) if path not in result.files]
    return result


def _failure(executor) -> tuple[str, str, HostNodeError] | None:
    for event, data in executor.status_messages:
        if event == "execution_error":
            cause = HostNodeError(data.get("exception_type", "Exception"),
                                  str(data.get("exception_message", "")).strip(), "".join(data.get("traceback") or []))
            return str(data["node_id"]), data.get("node_type", "?"), cause
        if event == "execution_interrupted":
            cause = HostNodeError("Interrupted", "processing was interrupted")
            return str(data["node_id"]), data.get("node_type", "?"), cause
    return None


def run(job: EngineJob) -> RunResult:
    """Runs `job` on the ComfyUI in `job.comfyui`; raises pal_core's workflow errors as the built-in
    runtime does (WorkflowValidationError: nothing ran; NodeExecutionError: a node failed)."""
    comfy = _start(job.comfyui)
    _add_model_folders(comfy, job)
    classes = comfy.nodes.NODE_CLASS_MAPPINGS
    prompt_id = str(uuid.uuid4())
    with _folders(comfy, job) as context:
        loaded = formats.load(job.workflow, classes)  # INPUT_TYPES may list the input folder: after _folders
        overrides.apply(loaded.prompt, job.overrides, classes)
        prompt = loaded.prompt
        outputs = _validate(comfy, prompt, prompt_id)
        listener = _ProgressListener(prompt, len(needed_nodes(prompt, outputs)), job.progress)
        executor = comfy.execution.PromptExecutor(comfy.host, cache_type=comfy.execution.CacheType.CLASSIC)
        extra_data = {"client_id": "pal-run"}
        if loaded.ui_workflow is not None:  # embedded in saved PNGs, as the frontend sends it
            extra_data["extra_pnginfo"] = {"workflow": loaded.ui_workflow}
        comfy.host.listener = listener
        start = time.perf_counter()
        try:
            executor.execute(prompt, prompt_id, extra_data, outputs)
        finally:
            comfy.host.listener = None
        result = _result(executor, prompt, listener, context, loaded.source_format, list(loaded.warnings),
                         time.perf_counter() - start)
    failure = _failure(executor)
    if failure is not None or not executor.success:
        node_id, class_type, cause = failure or ("?", "?", HostNodeError("Exception", "ComfyUI reported a failure"))
        raise NodeExecutionError(node_id, class_type, cause, partial=result)
    return result
