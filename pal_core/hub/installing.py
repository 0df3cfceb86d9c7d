"""Installing a checkpoint under a model name: check what it holds, convert it, record its checksum.

Used by `pal download` on the file it fetched and by `pal models add` on a file the user fetched by
hand. The file is read as data (safetensors; a torch checkpoint through `torch_pickle`; the weights of
a TorchScript export, never its program), converted key by key as `pal convert` does, and for a
catalogue name must be the network that name promises. Before writing, the free space is checked
against the converted size; a full disk (which safetensors reports as its own error) is one line
saying how much is needed and free. The result is written under a temporary name, hashed, recorded, and only then renamed into place, so
nothing half-written ever carries the final name.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Callable

from ..atomic import atomic_path
from ..outputs import check_output_folder, describe_os_error
from . import catalogue, model_store
from .checkpoint import CheckpointError, DetectorCheckpoint, save_detector_file
from .loading import read_checkpoint


MAX_NAME_LENGTH = 100  # a file name is at most 255 bytes; the staging name adds a pid and suffixes


class InstallError(ValueError):
    """The file cannot be installed under that name (says why and what to do)."""


def check_architecture(checkpoint: DetectorCheckpoint, entry: catalogue.CatalogueEntry) -> None:
    """Raises when the network is not the one the catalogue entry promises."""
    if not entry.architecture:
        return
    model = checkpoint.model
    if model.architecture != "swin_upernet":
        raise InstallError(f"this is a {model.architecture} model, not the PAL4VST Swin + UPerNet that "
                           f"{entry.name} is")
    config = model.config.to_dict()
    wrong = [f"{key} {config.get(key)} (expected {value})" for key, value in entry.architecture.items()
             if config.get(key) != value]
    if wrong:
        raise InstallError(f"a Swin + UPerNet of another shape than {entry.name}: " + ", ".join(wrong))


def install_file(source: str | os.PathLike, name: str, folder: str | os.PathLike | None = None,
                 origin: str = "", extra: dict | None = None, overwrite: bool = False,
                 say: Callable[[str], None] | None = None) -> Path:
    """Verifies `source`, converts it to `<folder>/<name>.safetensors` and records its sha256.

    `say(line)` is told what happens during the conversion (reading a 1.5 GB file takes seconds)."""
    source = Path(source)
    entry = catalogue.find(name)
    if entry is not None and entry.shipped:
        raise InstallError(f"{name} is shipped with the pack; install a file under another name")
    if not name or any(c in name for c in '/\\:') or name.startswith("."):
        raise InstallError(f"'{name}' cannot be a model name (no slashes, colons or leading dot)")
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InstallError(f"a model name must be at most {MAX_NAME_LENGTH} printable characters, not "
                           f"{len(name)} ({name[:20]!r}...); choose a shorter --name")
    folder = Path(folder) if folder is not None else model_store.install_folder()
    if (problem := check_output_folder(folder, "the models folder")) is not None:
        raise InstallError(f"{problem}; choose another folder with --dir")
    target = folder / f"{name}.safetensors"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} is already installed; pass --overwrite to replace it")
    say = say or (lambda message: None)
    say(f"reading {source.name} ({_size(source.stat().st_size)}) and converting it to {target.name}")
    # Every key and shape checked, as `pal convert` does. A TorchScript export's weights are read as data.
    checkpoint = read_checkpoint(source)
    if entry is not None:
        check_architecture(checkpoint, entry)
    checkpoint.name = name
    checkpoint.source = origin or f"installed from {source.name}"
    checkpoint.extra = {**checkpoint.extra, **(extra or {})}

    folder.mkdir(parents=True, exist_ok=True)
    needed = weights_bytes(checkpoint)
    _check_space(folder, needed)
    say(f"writing {target.name} ({_size(needed)})")
    staging = folder / f".{name}.{os.getpid()}.installing.safetensors"
    try:
        save_detector_file(checkpoint, staging, overwrite=True)
        model_store.write_checksum(target, model_store.sha256_of(staging))
        staging.chmod(0o644)  # safetensors writes 0600: ComfyUI may run as another user than `pal models add`
        with atomic_path(target, overwrite=overwrite) as tmp:
            staging.rename(tmp)
    except Exception as error:  # safetensors reports a full disk as its own SafetensorError, not OSError
        if is_disk_full(error):
            raise InstallError(_disk_full_message(folder, needed)) from error
        if isinstance(error, OSError):
            raise InstallError(f"could not install into {folder} ({describe_os_error(error)}); choose another "
                               "folder with --dir") from error
        raise
    finally:
        staging.unlink(missing_ok=True)
    return target


def weights_bytes(checkpoint: DetectorCheckpoint) -> int:
    """Bytes of the converted file's tensors (the header adds kilobytes)."""
    return sum(t.numel() * t.element_size() for t in checkpoint.model.state_dict().values())


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.0f} MB"


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    text = str(error)  # safetensors: "Error while serializing: IoError(Os { code: 28, kind: StorageFull, ...
    return "StorageFull" in text or "No space left on device" in text or f"code: {errno.ENOSPC}," in text


def _disk_full_message(folder: Path, needed: int) -> str:
    free = shutil.disk_usage(folder).free
    return (f"the disk holding {folder} is full: the converted model needs {needed / 1e9:.2f} GB and "
            f"{free / 1e9:.2f} GB are free; free some space or choose another folder with --dir, then run again")


def _check_space(folder: Path, needed: int) -> None:
    """Refuses before writing when the converted file cannot fit (a 1% margin for the header and metadata)."""
    if shutil.disk_usage(folder).free < needed * 1.01:
        raise InstallError(_disk_full_message(folder, needed))


__all__ = ["CheckpointError", "InstallError", "check_architecture", "install_file"]
