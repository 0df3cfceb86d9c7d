"""Where installed models live, and the checksum recorded for each.

A model installed under a name is `<folder>/<name>.safetensors` with `<name>.safetensors.sha256`
beside it (sha256sum's format, so `sha256sum -c` checks it too). Folders, first match wins:
the ones the layer above registers (inside ComfyUI: its `models/pal4vst/`, told by the node pack,
since this library never imports ComfyUI), then `$PAL_HOME/models`, else the platform's user data
folder (`~/.local/share/pal-nodes/models` on Linux). New models go to the first of them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from . import catalogue
from .resources import weights_dirs

HOME_ENV = "PAL_HOME"
CHECKSUM_SUFFIX = ".sha256"

_folder_sources: list = []


def register_folders(source) -> None:
    """Adds model folders to search before the home folder; new models go to the first of them.

    `source` is a list of folders, or a function returning one (asked at every lookup, so folders
    configured later count): the node pack passes ComfyUI's models/pal4vst folders this way.
    """
    if source not in _folder_sources:
        _folder_sources.append(source)


def _registered() -> list[Path]:
    folders = []
    for source in _folder_sources:
        for folder in (source() if callable(source) else source):
            if Path(folder) not in folders:
                folders.append(Path(folder))
    return folders


def user_data_folder() -> Path:
    """The platform's per-user data folder for this project."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "pal-nodes"


def home_folder() -> Path:
    """`$PAL_HOME/models`, else the user data folder's `models`."""
    home = os.environ.get(HOME_ENV)
    return (Path(home).expanduser() if home else user_data_folder()) / "models"


def model_folders() -> list[Path]:
    folders = _registered()
    if home_folder() not in folders:
        folders.append(home_folder())
    return folders


def install_folder() -> Path:
    return model_folders()[0]


def find_in(folders, name: str) -> Path | None:
    """`<folder>/<name>.safetensors` in the first of `folders` that has it, or None."""
    for folder in folders:
        candidate = Path(folder) / f"{name}.safetensors"
        if candidate.is_file():
            return candidate
    return None


def find_installed(name: str) -> Path | None:
    """The installed file of a model name, or None."""
    return find_in(model_folders(), name)


def installed_names() -> list[str]:
    """Names of every model installed in the model folders (hidden partial and staging files left out)."""
    return sorted({p.stem for folder in model_folders() if folder.is_dir() for p in folder.glob("*.safetensors")
                   if not p.name.startswith(".")})


def checksum_path(model: Path) -> Path:
    return model.with_name(model.name + CHECKSUM_SUFFIX)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksum(model: Path, digest: str) -> Path:
    """Records `digest` as the checksum of `model` (written to a temporary file, renamed into place)."""
    return atomic.write_text(checksum_path(model), f"{digest}  {model.name}\n")


def recorded_checksum(model: Path) -> str | None:
    try:
        text = checksum_path(model).read_text().split()
    except OSError:
        return None
    return text[0].lower() if text and len(text[0]) == 64 else None


@dataclass(frozen=True)
class Verification:
    path: Path
    ok: bool
    message: str


def verify(model: Path) -> Verification:
    """Re-hashes an installed file and compares it with the recorded checksum."""
    if not model.is_file():  # a folder or a FIFO named like a model: hashing it would fail or wait forever
        return Verification(model, False, "not a regular file; remove it and reinstall the model")
    expected = recorded_checksum(model)
    if expected is None:
        return Verification(model, False, f"no checksum recorded ({checksum_path(model).name} missing or "
                                          "unreadable); reinstall with `pal download` or `pal models add`")
    actual = sha256_of(model)
    if actual != expected:
        return Verification(model, False, f"sha256 {actual[:12]}... differs from the recorded {expected[:12]}...: "
                                          "the file changed or is damaged; reinstall it")
    return Verification(model, True, f"sha256 {actual} matches")


def locate_model(name: str, download: bool = False) -> Path | None:
    """The file of a catalogue model (None when it is not installed and `download` is False)."""
    entry = catalogue.get(name)
    if entry.shipped:
        return find_in(weights_dirs(), entry.shipped)
    path = find_installed(entry.name)
    if path is None and download:
        from .download import download_model  # the network, only when asked for
        path = download_model(entry.name)
    return path
