"""A real ComfyUI for tests: the pack installed the way ComfyUI-Manager does it, served on 127.0.0.1.

ComfyUI is not on the package index; the team keeps its 0.3.64 source in `shared/comfyui/` beside the
checkout (README there). This module unpacks it outside the checkout, builds a venv of its own and
caches both under ~/.cache/pal-nodes-tests/ ($PAL_TEST_CACHE), keyed by the tarball, the constraints
and the Python, so only the first run pays for it. Each test session then gets a fresh base directory
(custom_nodes/, models/, input/, output/) and one server; the unpacked source is never written to.

    install = ComfyInstall.prepare()                     # cached build
    base = make_base_dir(tmp, install, {"pal-nodes": ROOT})
    with ComfyServer.start(install, base) as server:
        server.object_info()["PALDetectArtifacts"]
        finished = server.run(api_prompt)             # POST /prompt, poll /history
        finished.images("8")                          # files the node wrote, as paths

Pytest fixtures (session scope, imported by conftest.py): `comfy_install`, `comfy_server` (the PAL pack
cloned into custom_nodes/pal-nodes and its requirements.txt installed, plus the probe pack below).
Tests using them carry the `comfyui` marker. Without shared/comfyui they are skipped with the reason;
with PAL_REQUIRE_COMFYUI=1 (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACK_FOLDER = "pal-nodes"  # a hyphen: ComfyUI must import the pack from a folder that is no valid module name
PROBE_FILE = Path(__file__).resolve().parent / "comfy_probe_node.py"
EXAMPLE_INPUTS = ROOT / "workflows" / "input"
SHARED_ENV = "PAL_COMFYUI_SHARED"  # a folder holding ComfyUI-*.tar.gz and constraints.txt
REQUIRE_ENV = "PAL_REQUIRE_COMFYUI"  # set in CI: a missing ComfyUI is a failure, not a skip
CACHE_ENV = "PAL_TEST_CACHE"
START_TIMEOUT = 600.0  # a cold start on a busy 2-core machine imports torch, transformers, ...
CATALOGUE_FILE = "pal-catalogue.json"  # in the session server's base directory: its $PAL_CATALOGUE
HOST_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1", "OMP_NUM_THREADS": "2"}
# The newest ComfyUI front end on PyPI that the browser tests also run on (0.3.64 bundles 1.27.10). Pinned so
# CI is reproducible; docs/comfyui.md says what it needs of the backend. Served with --front-end-root.
NEWEST_FRONT_END = "1.58.1"


class HostError(RuntimeError):
    """ComfyUI could not be built or started, or a request to it failed; the message says why."""


# ---------------------------------------------------------------------------------------------- build

def find_shared_comfyui() -> Path | None:
    """The folder with ComfyUI's tarball: $PAL_COMFYUI_SHARED, else shared/comfyui in or above the checkout."""
    if os.environ.get(SHARED_ENV):
        return Path(os.environ[SHARED_ENV])
    for folder in (ROOT, *ROOT.parents):
        candidate = folder / "shared" / "comfyui"
        if any(candidate.glob("ComfyUI-*.tar.gz")):
            return candidate
    return None


def require_shared_comfyui() -> Path:
    shared = find_shared_comfyui()
    if shared is None or not any(shared.glob("ComfyUI-*.tar.gz")):
        reason = (f"no ComfyUI source for the host tests: shared/comfyui/ComfyUI-*.tar.gz is not beside or "
                  f"above {ROOT} (set {SHARED_ENV} to the folder holding it)")
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(reason)
        pytest.skip(reason)
    return shared


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pal-nodes-tests")


def base_python() -> str:
    """The interpreter under the current venv (if any): the ComfyUI venv is layered over it, not over ours,
    so it never sees this checkout's own install of pal_core."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _digest(paths: list[Path], extra: str) -> str:
    sha = hashlib.sha256(extra.encode())
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()[:16]


def _run(command: list[str], what: str, **kwargs) -> None:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise HostError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n"
                        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


@dataclass(frozen=True)
class ComfyInstall:
    """Unpacked ComfyUI source and the venv that runs it."""

    folder: Path

    @property
    def source(self) -> Path:
        return self.folder / "ComfyUI"

    @property
    def python(self) -> Path:
        return self.folder / "venv" / "bin" / "python"

    @classmethod
    def prepare(cls, shared: Path | None = None) -> "ComfyInstall":
        """The cached install for this tarball, constraints and Python; built (under a lock) when missing."""
        shared = shared or require_shared_comfyui()
        tarball = sorted(shared.glob("ComfyUI-*.tar.gz"))[-1]
        constraints = shared / "constraints.txt"
        key = _digest([tarball] + ([constraints] if constraints.is_file() else []),
                      f"{sys.version}|{os.path.realpath(base_python())}")
        folder = cache_root() / f"comfyui-{key}"
        install = cls(folder)
        if (folder / "READY").is_file():
            return install
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"comfyui-{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building the same one
            if not (folder / "READY").is_file():
                install._build(tarball, constraints)
        return install

    def _build(self, tarball: Path, constraints: Path) -> None:
        started = time.monotonic()
        work = self.folder.with_name(self.folder.name + f".tmp-{os.getpid()}")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)  # a build that died before READY
        work.mkdir(parents=True)
        with tarfile.open(tarball) as archive:
            archive.extractall(work, filter="data")
        tops = [p for p in work.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "main.py").is_file():
            raise HostError(f"{tarball}: expected one folder with main.py inside, found {[p.name for p in tops]}")
        tops[0].rename(work / "ComfyUI")
        # venvs hard-code their own path: build it where it will live.
        work.rename(self.folder)
        try:
            _run([base_python(), "-m", "venv", "--system-site-packages", str(self.folder / "venv")], "creating the venv")
            pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                   "-r", str(self.source / "requirements.txt"), "requests"]
            if constraints.is_file():
                pip += ["-c", str(constraints)]
            _run(pip, "installing ComfyUI's requirements")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        (self.folder / "READY").write_text(f"built in {time.monotonic() - started:.0f} s\n")


@dataclass(frozen=True)
class FrontEnd:
    """A release of ComfyUI's front end (the comfyui-frontend-package wheel) unpacked under the tests' cache,
    for `--front-end-root`: installed with --target, so no environment of anyone's changes."""

    folder: Path
    version: str

    @property
    def static(self) -> Path:
        return self.folder / "comfyui_frontend_package" / "static"

    @classmethod
    def prepare(cls, version: str = NEWEST_FRONT_END) -> "FrontEnd":
        folder = cache_root() / f"frontend-{version}"
        front_end = cls(folder, version)
        if (folder / "READY").is_file():
            return front_end
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"frontend-{version}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "READY").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                try:
                    _run([base_python(), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                          "--target", str(folder), f"comfyui-frontend-package=={version}"],
                         f"installing ComfyUI's front end {version}")
                    if not (front_end.static / "index.html").is_file():
                        raise HostError(f"comfyui-frontend-package {version} has no static/index.html in {folder}")
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                (folder / "READY").write_text(f"comfyui-frontend-package {version}\n")
        return front_end


# ------------------------------------------------------------------------------------ base directory

def pack_files(source: Path) -> list[Path]:
    """What `git clone` of the checkout would hold (tracked and new, unignored files), relative paths."""
    if (source / ".git").exists():
        listed = subprocess.run(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True).stdout
        names = [Path(n) for n in listed.decode().split("\0") if n]
        return [n for n in names if (source / n).is_file()]  # a deleted but still tracked file is gone
    skip = {".venv", "__pycache__", ".pytest_cache", "out", "build", "dist", ".git"}
    return [p.relative_to(source) for p in source.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(source).parts)]


def install_pack_like_manager(install: ComfyInstall, base: Path, source: Path = ROOT,
                              folder: str = PACK_FOLDER) -> Path:
    """ComfyUI-Manager's way: the repository cloned into custom_nodes/<folder>, then
    `pip install -r requirements.txt` into ComfyUI's Python. The project itself is not pip-installed."""
    target = base / "custom_nodes" / folder
    for name in pack_files(source):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)
    requirements = target / "requirements.txt"
    if not requirements.is_file():
        raise HostError(f"{source} has no requirements.txt: ComfyUI-Manager would install no dependencies")
    _run([str(install.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(requirements)],
         "pip install -r requirements.txt (as ComfyUI-Manager does)")
    return target


def make_base_dir(base: Path, install: ComfyInstall, packs: dict[str, Path] | None = None,
                  probe: bool = True) -> Path:
    """A ComfyUI base directory (custom_nodes, models, input, output) with the given packs installed (default:
    this checkout as custom_nodes/pal-nodes), the probe node, and the example workflows' images in input/."""
    for name in ("custom_nodes", "models", "input", "output", "temp", "user"):
        (base / name).mkdir(parents=True, exist_ok=True)
    for folder, source in (packs if packs is not None else {PACK_FOLDER: ROOT}).items():
        install_pack_like_manager(install, base, source, folder)
    if probe:
        shutil.copy2(PROBE_FILE, base / "custom_nodes" / PROBE_FILE.name)
    for image in EXAMPLE_INPUTS.glob("*.jpg"):  # what the example workflows load
        shutil.copy2(image, base / "input" / image.name)
    return base


# --------------------------------------------------------------------------------------------- server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FinishedPrompt:
    """A prompt ComfyUI ran: its /history entry and where its files are."""

    prompt_id: str
    history: dict
    base: Path

    @property
    def status(self) -> dict:
        return self.history.get("status", {})

    @property
    def succeeded(self) -> bool:
        return self.status.get("status_str") == "success" and self.status.get("completed", False)

    @property
    def outputs(self) -> dict:
        return self.history.get("outputs", {})

    def error(self) -> dict | None:
        """The execution_error message (node_id, node_type, exception_message, traceback), if any."""
        for kind, data in self.status.get("messages", []):
            if kind == "execution_error":
                return data
        return None

    def images(self, node_id: str, key: str = "images") -> list[Path]:
        files = []
        for item in self.outputs.get(str(node_id), {}).get(key, []):
            folder = {"output": "output", "temp": "temp", "input": "input"}[item.get("type", "output")]
            files.append(self.base / folder / item.get("subfolder", "") / item["filename"])
        return files

    def text(self, node_id: str) -> list[str]:
        return list(self.outputs.get(str(node_id), {}).get("text", []))


@dataclass
class ComfyServer:
    install: ComfyInstall
    base: Path
    port: int
    process: subprocess.Popen
    log_path: Path
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def start(cls, install: ComfyInstall, base: Path, extra_args: list[str] | None = None,
              timeout: float = START_TIMEOUT, env: dict[str, str] | None = None) -> "ComfyServer":
        port = free_port()
        log_path = base / "comfyui.log"
        command = [str(install.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                   "--disable-auto-launch", "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
                   "--disable-api-nodes", *(extra_args or [])]
        extra_env = env
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PAL_"))}
        env.update(HOST_ENV)
        env.update(extra_env or {})
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, cwd=install.source, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = cls(install, base, port, process, log_path)
        try:
            server._wait_until_up(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def __enter__(self) -> "ComfyServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HostError(f"ComfyUI exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(1.0)
        raise HostError(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Ends the server this object started (its own process group) and waits for it."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    # -- HTTP
    def request(self, path: str, data: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"} if body is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get(self, path: str, timeout: float = 60):
        status, body = self.request(path, timeout=timeout)
        if status != 200:
            raise HostError(f"GET {path}: HTTP {status}: {body[:2000]!r}")
        return json.loads(body)

    def object_info(self) -> dict:
        return self.get("/object_info")

    def queue(self, prompt: dict) -> str:
        """POST /prompt; a refused prompt raises HostError with ComfyUI's node errors."""
        status, body = self.request("/prompt", {"prompt": prompt, "client_id": self.client_id})
        answer = json.loads(body) if body else {}
        if status != 200 or answer.get("node_errors"):
            raise HostError(f"ComfyUI refused the prompt (HTTP {status}): {json.dumps(answer, indent=1)[:4000]}")
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> FinishedPrompt:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("status_str") in ("success", "error")):
                return FinishedPrompt(prompt_id, entry, self.base)
            if self.process.poll() is not None:
                raise HostError(f"ComfyUI exited ({self.process.returncode}) while running {prompt_id}:\n"
                                f"{self.log_tail()}")
            time.sleep(0.5)
        self.request("/interrupt", {})
        raise HostError(f"prompt {prompt_id} did not finish within {timeout:.0f} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 600) -> FinishedPrompt:
        """Queues an API-format prompt and waits for it; fails with the node's error if it did not succeed."""
        finished = self.wait(self.queue(prompt), timeout)
        if not finished.succeeded:
            error = finished.error() or finished.status
            raise HostError(f"the prompt failed in ComfyUI: {json.dumps(error, indent=1)[:6000]}")
        return finished

    def import_problems(self, folder: str = PACK_FOLDER) -> list[str]:
        """Log lines where ComfyUI reports that the pack in custom_nodes/<folder> failed to import."""
        pack = str(self.base / "custom_nodes" / folder)
        return [line for line in self.log().splitlines()
                if (pack in line or line.rstrip().endswith(folder)) and ("IMPORT FAILED" in line or "Cannot import" in line)]


# ------------------------------------------------------------------------------------ pytest fixtures

@pytest.fixture(scope="session")
def comfy_install() -> ComfyInstall:
    try:
        return ComfyInstall.prepare()
    except HostError as error:
        pytest.fail(str(error))


@contextlib.contextmanager
def _session_server(install: ComfyInstall, extra_args: list[str] | None = None):
    # Not under pytest's basetemp: concurrent pytest runs of the same user prune each other's old ones.
    base = Path(tempfile.mkdtemp(prefix="pal-comfyui-base-"))
    # The documented mirror switch, empty: a test may point a catalogue model at a stand-in host by writing it.
    catalogue = base / CATALOGUE_FILE
    catalogue.write_text("{}")
    try:
        with ComfyServer.start(install, make_base_dir(base, install), extra_args,
                               env={"PAL_CATALOGUE": str(catalogue)}) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def comfy_server(comfy_install):
    """One ComfyUI for the session: this checkout in custom_nodes/pal-nodes (Manager way) and the probe."""
    with _session_server(comfy_install) as server:
        yield server


@pytest.fixture(scope="session")
def newest_front_end() -> FrontEnd:
    try:
        return FrontEnd.prepare()
    except HostError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def comfy_server_newest_front_end(comfy_install, newest_front_end):
    """The same ComfyUI and packs, serving the newest front end (NEWEST_FRONT_END) instead of its own."""
    with _session_server(comfy_install, ["--front-end-root", str(newest_front_end.static)]) as server:
        yield server
