"""comfy-cli, the Comfy registry's tool (`comfy node validate`, `comfy node pack`, `comfy node publish`), for tests.

Pinned (COMFY_CLI_VERSION) and installed from PyPI into a venv of its own under the tests' cache
($PAL_TEST_CACHE, as tests/comfy_host.py keeps ComfyUI), never into the project's or the user's
environment; built once under a lock. It runs offline: telemetry off (DO_NOT_TRACK), no prompts, its
config in a temporary HOME, and inside a network namespace of its own where `unshare -rn` works.

    python tests/comfy_cli.py      # builds it (.ci/run does, before the tests)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_host import HostError, _run, base_python, cache_root  # noqa: E402

COMFY_CLI_VERSION = "1.23.0"
OFFLINE_ENV = {"DO_NOT_TRACK": "1", "COMFY_NO_TELEMETRY": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def network_isolation() -> list[str]:
    """`unshare -rn` where this machine allows it (a loopback-only network for the command), else nothing."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


@dataclass(frozen=True)
class ComfyCli:
    folder: Path

    @property
    def executable(self) -> Path:
        return self.folder / "venv" / "bin" / "comfy"

    @classmethod
    def prepare(cls, version: str = COMFY_CLI_VERSION) -> "ComfyCli":
        folder = cache_root() / f"comfy-cli-{version}"
        tool = cls(folder)
        if (folder / "READY").is_file():
            return tool
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f"comfy-cli-{version}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "READY").is_file():
                tool._build(version)
        return tool

    def _build(self, version: str) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            _run([base_python(), "-m", "venv", str(self.folder / "venv")], "creating comfy-cli's venv")
            _run([str(self.folder / "venv" / "bin" / "python"), "-m", "pip", "install", "-q",
                  "--disable-pip-version-check", f"comfy-cli=={version}"], f"installing comfy-cli {version}")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
        (self.folder / "READY").write_text(f"comfy-cli {version}\n")

    def run(self, folder: Path, *arguments: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`comfy --skip-prompt <arguments>` in `folder` (a pack's root), offline."""
        with tempfile.TemporaryDirectory(prefix="comfy-cli-home-") as home:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
            env.update(OFFLINE_ENV, HOME=home, XDG_CONFIG_HOME=str(Path(home) / ".config"))
            # its own venv's bin first: `comfy node validate` runs ruff as `sys.executable -m ruff`
            env["PATH"] = f"{self.executable.parent}{os.pathsep}{env.get('PATH', '')}"
            return subprocess.run([*network_isolation(), str(self.executable), "--skip-prompt", "--no-enable-telemetry",
                                   *arguments], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)


if __name__ == "__main__":
    try:
        print(ComfyCli.prepare().executable)
    except HostError as error:
        sys.exit(str(error))
