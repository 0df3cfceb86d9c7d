"""Installing a checkpoint under a model name: check what it holds, convert it, record its checksum.

Used by `pal download` on the file it fetched and by `pal models add` on a file the user fetched by
hand. The file is read as data (safetensors, or `torch.load(weights_only=True)`), converted key by
key as `pal convert` does, and for a catalogue name must be the network that name promises. The
result is written under a temporary name, hashed, recorded, and only then renamed into place, so
nothing half-written ever carries the final name.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..atomic import atomic_path
from ..outputs import check_output_folder, describe_os_error
from . import catalogue, model_store
from .checkpoint import CheckpointError, DetectorCheckpoint, save_detector_file
from .loading import read_checkpoint, sniff_format


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
                 origin: str = "", extra: dict | None = None, overwrite: bool = False) -> Path:
    """Verifies `source`, converts it to `<folder>/<name>.safetensors` and records its sha256."""
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
    if sniff_format(source) == "torchscript":
        link = f" ({entry.page})" if entry is not None and entry.page else ""
        raise InstallError(f"{source} is a TorchScript export (a program, not weights); fetch the PyTorch "
                           f"(mmseg .pth) checkpoint of the same model instead{link}")
    checkpoint = read_checkpoint(source)  # every key and shape checked, as `pal convert` does
    if entry is not None:
        check_architecture(checkpoint, entry)
    checkpoint.name = name
    checkpoint.source = origin or f"installed from {source.name}"
    checkpoint.extra = {**checkpoint.extra, **(extra or {})}

    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{name}.{os.getpid()}.installing.safetensors"
    try:
        save_detector_file(checkpoint, staging, overwrite=True)
        model_store.write_checksum(target, model_store.sha256_of(staging))
        staging.chmod(0o644)  # safetensors writes 0600: ComfyUI may run as another user than `pal models add`
        with atomic_path(target, overwrite=overwrite) as tmp:
            staging.rename(tmp)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise InstallError(f"the disk holding {folder} is full; free some space (a PAL4VST model takes "
                               "about 0.5 GB) or choose another folder with --dir, then run again") from error
        raise InstallError(f"could not install into {folder} ({describe_os_error(error)}); choose another folder "
                           "with --dir") from error
    finally:
        staging.unlink(missing_ok=True)
    return target


__all__ = ["CheckpointError", "InstallError", "check_architecture", "install_file"]
